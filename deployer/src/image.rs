//! Where the image comes from: a reference the user pinned (`--image`), an OCI layout or archive
//! (`--image-archive`), the Dockerfile built by docker or podman, or, where no container
//! engine exists (the emulator path), the static musl binary packaged as a one-layer image.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::config::{Architecture, Settings};
use crate::error::{DeployError, Kind};
use crate::oci::Image;
use crate::reference::ImageRef;
use crate::report::Reporter;

#[derive(Debug, Clone, Default)]
pub struct ImageOptions {
    /// An image already in a registry, pinned by digest.
    pub reference: Option<String>,
    pub archive: Option<PathBuf>,
    /// A static binary to package instead of building one.
    pub binary: Option<PathBuf>,
}

/// The image to roll out.
#[derive(Debug)]
pub enum Source {
    /// Push this, then run it.
    Built { image: Image, how: String },
    /// Run this reference as it is.
    Pinned(ImageRef),
}

/// How `deploy` finds the image, decided before the first AWS call.
pub fn resolve(
    settings: &Settings,
    options: &ImageOptions,
    report: &Reporter,
) -> Result<Source, DeployError> {
    if let Some(reference) = &options.reference {
        return ImageRef::parse(reference).map(Source::Pinned).map_err(|e| {
            DeployError::usage(
                format!("--image: {e}"),
                "give it pinned, as REGISTRY/REPOSITORY@sha256:DIGEST, so every task runs the same bytes",
            )
        });
    }
    if let Some(archive) = &options.archive {
        let image = Image::from_layout(archive, settings.architecture)?;
        return Ok(Source::Built {
            image,
            how: format!("from {}", archive.display()),
        });
    }
    if let Some(binary) = &options.binary {
        return package(settings, binary);
    }
    if !settings.emulator {
        if let Some(engine) = engine() {
            return build_with(engine, settings, report);
        }
        return Err(DeployError::refused(
            Kind::NoContainerEngine,
            format!(
                "env {} builds the image from the Dockerfile, and no container engine answers (`docker info` and `podman info` both failed)",
                settings.env
            ),
            "start Docker (or install podman), or pass --image-archive PATH (an OCI layout) or --image REF@sha256:DIGEST",
        ));
    }
    let binary = build_static(&settings.root, settings.architecture, report)?;
    package(settings, &binary)
}

fn labels(root: &Path) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (
            "org.opencontainers.image.title".to_string(),
            "tickstream".to_string(),
        ),
        (
            "org.opencontainers.image.source".to_string(),
            "https://github.com/tickstream/tickstream".to_string(),
        ),
    ]);
    if let Some(rev) = git_revision(root) {
        labels.insert("org.opencontainers.image.revision".into(), rev);
    }
    labels
}

fn git_revision(root: &Path) -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(root)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn package(settings: &Settings, binary: &Path) -> Result<Source, DeployError> {
    check_static(binary, settings.architecture)?;
    let image = Image::from_binary(
        binary,
        settings.architecture,
        settings.port,
        &labels(&settings.root),
    )?;
    Ok(Source::Built {
        image,
        how: format!(
            "the static binary {} packaged as a one-layer OCI image (no container engine here; real environments run the Alpine image from the Dockerfile)",
            binary.display()
        ),
    })
}

/// A dynamically linked or foreign binary would fail only when the task starts; say so now.
pub fn check_static(binary: &Path, arch: Architecture) -> Result<(), DeployError> {
    let bytes = std::fs::read(binary)
        .map_err(|e| DeployError::Build(format!("{}: {e}", binary.display())))?;
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" {
        return Err(DeployError::Build(format!(
            "{} is not an ELF executable",
            binary.display()
        )));
    }
    let machine = u16::from_le_bytes([bytes[18], bytes[19]]);
    let want = match arch {
        Architecture::X86_64 => 62,
        Architecture::Arm64 => 183,
    };
    if machine != want {
        return Err(DeployError::Build(format!(
            "{} is not built for {} (ELF machine {machine})",
            binary.display(),
            arch.oci()
        )));
    }
    if bytes.windows(b"ld-linux".len()).any(|w| w == b"ld-linux") {
        return Err(DeployError::Build(format!(
            "{} is dynamically linked; build it with --target {}",
            binary.display(),
            arch.musl_target()
        )));
    }
    Ok(())
}

/// `cargo build --release` of the static binary for `arch`, adding the Rust target if needed.
pub fn build_static(
    root: &Path,
    arch: Architecture,
    report: &Reporter,
) -> Result<PathBuf, DeployError> {
    let target = arch.musl_target();
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(root)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == target)
        })
        .unwrap_or(false);
    if !installed {
        report.line(format!(
            "adding the Rust target {target} (rustup target add)"
        ));
        let ok = Command::new("rustup")
            .args(["target", "add", target])
            .current_dir(root)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err(DeployError::Build(format!(
                "rustup target add {target} failed"
            )));
        }
    }
    report.line(format!(
        "building the static binary: cargo build --release --locked -p tickstream --target {target} (the first build takes a few minutes)"
    ));
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    // For the other architecture no C cross-linker is needed: tickstream is pure Rust, and the
    // toolchain's own lld links a static musl binary (an arm64 build on x86_64, for instance).
    let linker_var = format!(
        "CARGO_TARGET_{}_LINKER",
        target.to_ascii_uppercase().replace('-', "_")
    );
    if !target.starts_with(std::env::consts::ARCH) && std::env::var_os(&linker_var).is_none() {
        cargo.env(&linker_var, "rust-lld");
    }
    let status = cargo
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "tickstream",
            "--target",
            target,
        ])
        .current_dir(root)
        .status()
        .map_err(|e| DeployError::Build(format!("running cargo: {e}")))?;
    if !status.success() {
        return Err(DeployError::Build(format!(
            "cargo build for {target} failed ({status})"
        )));
    }
    let target_dir =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    Ok(target_dir.join(target).join("release").join("tickstream"))
}

#[derive(Debug, Clone, Copy)]
enum Engine {
    Docker,
    Podman,
}

fn engine() -> Option<Engine> {
    let works = |program: &str| {
        Command::new(program)
            .arg("info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if works("docker") {
        Some(Engine::Docker)
    } else if works("podman") {
        Some(Engine::Podman)
    } else {
        None
    }
}

/// Builds the Dockerfile for the configured platform into an OCI archive and reads it back.
fn build_with(
    engine: Engine,
    settings: &Settings,
    report: &Reporter,
) -> Result<Source, DeployError> {
    let out_dir = settings.root.join("target").join("deploy");
    std::fs::create_dir_all(&out_dir).map_err(|e| DeployError::Build(e.to_string()))?;
    let archive = out_dir.join(format!("image-{}.tar", settings.architecture.oci()));
    let platform = format!("linux/{}", settings.architecture.oci());
    let revision = git_revision(&settings.root).unwrap_or_default();
    let run = |program: &str, args: &[String]| -> Result<(), DeployError> {
        report.line(format!("{program} {}", args.join(" ")));
        let status = Command::new(program)
            .args(args)
            .current_dir(&settings.root)
            .status()
            .map_err(|e| DeployError::Build(format!("{program}: {e}")))?;
        if status.success() {
            Ok(())
        } else {
            Err(DeployError::Build(format!(
                "{program} build failed ({status})"
            )))
        }
    };
    let revision_arg = format!("REVISION={revision}");
    match engine {
        Engine::Docker => run(
            "docker",
            &[
                "buildx".into(),
                "build".into(),
                "--platform".into(),
                platform.clone(),
                "--build-arg".into(),
                revision_arg,
                "--provenance=false".into(),
                "--output".into(),
                format!("type=oci,dest={}", archive.display()),
                ".".into(),
            ],
        )?,
        Engine::Podman => {
            let tag = format!("localhost/{}:deploy", settings.app);
            run(
                "podman",
                &[
                    "build".into(),
                    "--platform".into(),
                    platform.clone(),
                    "--build-arg".into(),
                    revision_arg,
                    "-t".into(),
                    tag.clone(),
                    ".".into(),
                ],
            )?;
            let _ = std::fs::remove_file(&archive);
            run(
                "podman",
                &[
                    "save".into(),
                    "--format".into(),
                    "oci-archive".into(),
                    "-o".into(),
                    archive.display().to_string(),
                    tag,
                ],
            )?;
        }
    }
    let image = Image::from_layout(&archive, settings.architecture)?;
    Ok(Source::Built {
        image,
        how: format!("the Dockerfile built by {engine:?} for {platform}"),
    })
}
