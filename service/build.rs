//! Embeds the web dashboard in the binary, so one static file serves everything.
//!
//! Where the files come from, first match wins:
//! 1. `TICKSTREAM_WEB_DIST=DIR`: an already built `web/dist` (the Dockerfile's node stage).
//! 2. `web/` built here with npm into OUT_DIR (`npm ci` when `node_modules` is missing or older
//!    than the lockfile, then `npm run build`). A failing npm fails the build, loudly.
//! 3. No npm on this machine (or `TICKSTREAM_WEB_BUILD=0`): the small built-in board in
//!    `src/index.html`, with a warning saying how to get the dashboard.
//!
//! Every file is embedded raw and gzipped, with a content hash for its ETag.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(env("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env("OUT_DIR").expect("cargo sets OUT_DIR"));
    let web = manifest.join("../web");
    println!("cargo:rerun-if-env-changed=TICKSTREAM_WEB_DIST");
    println!("cargo:rerun-if-env-changed=TICKSTREAM_WEB_BUILD");
    println!("cargo:rerun-if-changed=src/index.html");
    for input in [
        "src",
        "index.html",
        "package.json",
        "package-lock.json",
        "vite.config.ts",
        "tsconfig.json",
    ] {
        println!("cargo:rerun-if-changed={}", web.join(input).display());
    }

    let (dir, source) = if let Some(dist) = env("TICKSTREAM_WEB_DIST") {
        let dist = PathBuf::from(dist);
        assert!(
            dist.join("index.html").is_file(),
            "TICKSTREAM_WEB_DIST={} holds no index.html",
            dist.display()
        );
        (dist, "dashboard")
    } else if env("TICKSTREAM_WEB_BUILD").as_deref() != Some("0")
        && web.join("package.json").is_file()
        && npm_works()
    {
        let dist = out.join("web");
        build(&web, &dist);
        (dist, "dashboard")
    } else {
        println!(
            "cargo:warning=npm not found: serving the minimal built-in board at /. Install Node.js 20.19+ (npm) and rebuild for the dashboard (web/)."
        );
        let dir = out.join("fallback");
        std::fs::create_dir_all(&dir).expect("create fallback dir");
        std::fs::copy(manifest.join("src/index.html"), dir.join("index.html"))
            .expect("copy index.html");
        (dir, "minimal")
    };
    generate(&dir, source, &out.join("web_assets.rs"));
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn npm_works() -> bool {
    Command::new("npm")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn run(cmd: &mut Command, what: &str) {
    let status = cmd.status().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        status.success(),
        "{what} failed ({status}); see the output above"
    );
}

fn build(web: &Path, dist: &Path) {
    let installed = web.join("node_modules/.package-lock.json");
    let stale = match (
        modified(&installed),
        modified(&web.join("package-lock.json")),
    ) {
        (Some(installed), Some(lock)) => installed < lock,
        _ => true,
    };
    if stale {
        run(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(web),
            "npm ci in web/",
        );
    }
    run(
        Command::new("npm")
            .args(["run", "--silent", "build"])
            .env("TICKSTREAM_WEB_OUT", dist)
            .current_dir(web),
        "npm run build in web/",
    );
}

fn files(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if path.is_dir() {
            files(&path, &format!("{prefix}{name}/"), out);
        } else {
            out.push((format!("{prefix}{name}"), path));
        }
    }
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" | "map" => "application/json",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// FNV-1a, enough to tell versions of a file apart for an ETag.
fn hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn generate(dir: &Path, source: &str, target: &Path) {
    let mut list = Vec::new();
    files(dir, "/", &mut list);
    let gz_dir = target.with_file_name("web_gz");
    std::fs::create_dir_all(&gz_dir).expect("create gz dir");
    let mut code = String::new();
    writeln!(
        code,
        "/// Which web build is embedded: \"dashboard\" or \"minimal\"."
    )
    .ok();
    writeln!(code, "pub const WEB_SOURCE: &str = {source:?};").ok();
    writeln!(code, "pub static ASSETS: &[Asset] = &[").ok();
    for (i, (path, file)) in list.iter().enumerate() {
        let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&bytes).expect("gzip");
        let gz = gz.finish().expect("gzip");
        let gz_path = gz_dir.join(format!("{i}.gz"));
        std::fs::write(&gz_path, &gz).expect("write gz");
        // Only worth sending compressed when it saves something.
        let gzip = if gz.len() + 64 < bytes.len() {
            format!("Some(include_bytes!({:?}))", gz_path.display().to_string())
        } else {
            "None".to_string()
        };
        writeln!(
            code,
            "    Asset {{ path: {path:?}, content_type: {:?}, etag: \"\\\"{:016x}\\\"\", body: include_bytes!({:?}), gzip: {gzip} }},",
            content_type(path),
            hash(&bytes),
            file.display().to_string(),
        )
        .ok();
    }
    writeln!(code, "];").ok();
    std::fs::write(target, code).expect("write web_assets.rs");
}
