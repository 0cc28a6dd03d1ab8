//! OCI images held in memory: made from the static binary (when no container engine exists), or
//! read from an OCI layout (a directory or a tar archive, as `docker buildx --output type=oci`
//! and `podman save --format oci-archive` write them). Every blob is addressed by its SHA-256, so
//! the same binary always makes the same image digest and an unchanged deploy pushes nothing.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

use serde_json::{Value, json};

use crate::config::Architecture;
use crate::reference::Digest;

pub const MANIFEST_V1: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX_V1: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST_V2: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const CONFIG_V1: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// No archive we read may be larger: images of a static binary are a few MiB.
pub const MAX_ARCHIVE_BYTES: u64 = 2 << 30;

/// Where the binary lives in the image, as in the Dockerfile.
pub const BINARY_PATH: &str = "usr/local/bin/tickstream";

#[derive(Debug, Clone)]
pub struct Blob {
    pub digest: Digest,
    pub media_type: String,
    pub data: Vec<u8>,
}

impl Blob {
    /// A blob read from elsewhere, refused unless its bytes have the digest it was named by.
    fn verified(named: &Digest, media_type: &str, data: Vec<u8>) -> Result<Blob, OciError> {
        let actual = Digest::of(&data);
        if &actual != named {
            return Err(OciError::DigestMismatch {
                digest: named.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(Blob {
            digest: actual,
            media_type: media_type.into(),
            data,
        })
    }

    pub fn new(media_type: &str, data: Vec<u8>) -> Blob {
        Blob {
            digest: Digest::of(&data),
            media_type: media_type.to_string(),
            data,
        }
    }
}

/// One single-platform image: its manifest (as bytes, because the digest is of these exact
/// bytes), its config and its layers.
#[derive(Debug, Clone)]
pub struct Image {
    pub manifest: Blob,
    pub config: Blob,
    pub layers: Vec<Blob>,
}

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error(
        "{0} is not an OCI image layout (no index.json): export with `docker buildx build --output type=oci,dest=image.tar` or `podman save --format oci-archive`"
    )]
    NotALayout(String),
    #[error("the image layout is malformed: {0}")]
    Malformed(String),
    #[error("blob {0} is missing from the image layout")]
    MissingBlob(String),
    #[error("blob {digest} does not match its content ({actual})")]
    DigestMismatch { digest: String, actual: String },
    #[error(
        "the image is built for {image}, but the task runs on {wanted}: rebuild for {wanted} or set architecture = \"{image}\" (otherwise the task dies with \"exec format error\")"
    )]
    WrongArchitecture { image: String, wanted: String },
    #[error("{path} is larger than {MAX_ARCHIVE_BYTES} bytes")]
    TooLarge { path: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OciError + '_ {
    move |e| OciError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn descriptor(blob: &Blob) -> Value {
    json!({ "mediaType": blob.media_type, "digest": blob.digest, "size": blob.data.len() })
}

impl Image {
    /// A minimal image holding only the static binary at the Dockerfile's path, run as uid
    /// 10001 like the Alpine image. Reproducible: fixed timestamps, owners and gzip header.
    pub fn from_binary(
        binary: &Path,
        arch: Architecture,
        port: u16,
        labels: &BTreeMap<String, String>,
    ) -> Result<Image, OciError> {
        let bytes = std::fs::read(binary).map_err(io(binary))?;
        let mut tar = tar::Builder::new(Vec::new());
        let add_dir =
            |tar: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32| -> std::io::Result<()> {
                let mut h = tar::Header::new_ustar();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(mode);
                h.set_size(0);
                h.set_mtime(0);
                h.set_uid(0);
                h.set_gid(0);
                h.set_cksum();
                tar.append_data(&mut h, path, std::io::empty())
            };
        let build = |tar: &mut tar::Builder<Vec<u8>>| -> std::io::Result<()> {
            for dir in ["usr/", "usr/local/", "usr/local/bin/"] {
                add_dir(tar, dir, 0o755)?;
            }
            // A writable /tmp would contradict the read-only root; none is needed.
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o755);
            h.set_size(bytes.len() as u64);
            h.set_mtime(0);
            h.set_uid(0);
            h.set_gid(0);
            h.set_cksum();
            tar.append_data(&mut h, BINARY_PATH, bytes.as_slice())
        };
        build(&mut tar).map_err(io(binary))?;
        let layer_tar = tar.into_inner().map_err(io(binary))?;
        let diff_id = Digest::of(&layer_tar).to_string();
        let mut gz = flate2::GzBuilder::new()
            .mtime(0)
            .write(Vec::new(), flate2::Compression::default());
        gz.write_all(&layer_tar).map_err(io(binary))?;
        let layer = Blob::new(LAYER_GZIP, gz.finish().map_err(io(binary))?);
        let config = json!({
            "architecture": arch.oci(),
            "os": "linux",
            "config": {
                "User": "10001:10001",
                "Entrypoint": [format!("/{BINARY_PATH}")],
                "ExposedPorts": { format!("{port}/tcp"): {} },
                "Env": ["PATH=/usr/local/bin"],
                "StopSignal": "SIGTERM",
                "Labels": labels,
            },
            "rootfs": { "type": "layers", "diff_ids": [diff_id] },
            "history": [{ "created_by": "tickstream deploy: the static binary only (no container engine here)" }],
        });
        let config = Blob::new(
            CONFIG_V1,
            serde_json::to_vec(&config).map_err(|e| OciError::Malformed(e.to_string()))?,
        );
        Ok(Image::assemble(config, vec![layer]))
    }

    fn assemble(config: Blob, layers: Vec<Blob>) -> Image {
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_V1,
            "config": descriptor(&config),
            "layers": layers.iter().map(descriptor).collect::<Vec<_>>(),
        });
        let manifest = Blob::new(MANIFEST_V1, manifest.to_string().into_bytes());
        Image {
            manifest,
            config,
            layers,
        }
    }

    /// Reads the image for `arch` from an OCI layout directory or a tar archive of one.
    pub fn from_layout(path: &Path, arch: Architecture) -> Result<Image, OciError> {
        let store = if path.is_dir() {
            Store::Dir(path.to_path_buf())
        } else {
            Store::Archive(read_archive(path)?)
        };
        let index = store
            .read("index.json")?
            .ok_or_else(|| OciError::NotALayout(path.display().to_string()))?;
        let index: Value = serde_json::from_slice(&index)
            .map_err(|e| OciError::Malformed(format!("index.json: {e}")))?;
        let image = pick(&store, &index, arch, 0)?;
        image.check_architecture(arch)?;
        Ok(image)
    }

    /// The architecture the config declares.
    pub fn architecture(&self) -> Option<String> {
        let config: Value = serde_json::from_slice(&self.config.data).ok()?;
        config.get("architecture")?.as_str().map(str::to_string)
    }

    pub fn check_architecture(&self, arch: Architecture) -> Result<(), OciError> {
        match self.architecture() {
            Some(a) if a == arch.oci() => Ok(()),
            other => Err(OciError::WrongArchitecture {
                image: other.unwrap_or_else(|| "an unknown architecture".into()),
                wanted: arch.oci().into(),
            }),
        }
    }

    /// The entrypoint and command the config declares.
    pub fn command(&self) -> Vec<String> {
        let Ok(config) = serde_json::from_slice::<Value>(&self.config.data) else {
            return Vec::new();
        };
        let list = |key: &str| -> Vec<String> {
            config["config"][key]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut cmd = list("Entrypoint");
        cmd.extend(list("Cmd"));
        cmd
    }

    /// Builds an image from a manifest and the blobs it names (as pulled from a registry).
    pub fn from_parts(
        manifest: Blob,
        mut fetch: impl FnMut(&Digest) -> Option<Vec<u8>>,
    ) -> Result<Image, OciError> {
        let m: Value = serde_json::from_slice(&manifest.data)
            .map_err(|e| OciError::Malformed(e.to_string()))?;
        let mut blob = |d: &Value| -> Result<Blob, OciError> {
            let named = descriptor_digest(d)?;
            let media = d["mediaType"].as_str().unwrap_or(LAYER_GZIP);
            let data = fetch(&named).ok_or_else(|| OciError::MissingBlob(named.to_string()))?;
            Blob::verified(&named, media, data)
        };
        let config = blob(&m["config"])?;
        let layers = m["layers"]
            .as_array()
            .ok_or_else(|| OciError::Malformed("manifest without layers".into()))?
            .iter()
            .map(&mut blob)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Image {
            manifest,
            config,
            layers,
        })
    }

    /// Unpacks the layers in order into `root`. Whiteouts (`.wh.NAME` removes NAME,
    /// `.wh..wh..opq` empties its directory) apply to what earlier layers left, and neither an
    /// entry nor a whiteout can reach outside `root`: `..`, absolute paths and paths through a
    /// symbolic link are refused.
    pub fn unpack(&self, root: &Path) -> Result<(), OciError> {
        std::fs::create_dir_all(root).map_err(io(root))?;
        let root = root.canonicalize().map_err(io(root))?;
        for layer in &self.layers {
            let reader: Box<dyn Read> = if layer.media_type.contains("gzip") {
                Box::new(flate2::read::GzDecoder::new(layer.data.as_slice()))
            } else {
                Box::new(layer.data.as_slice())
            };
            let mut archive = tar::Archive::new(reader);
            archive.set_preserve_permissions(true);
            for entry in archive.entries().map_err(io(&root))? {
                let mut entry = entry.map_err(io(&root))?;
                let path = entry.path().map_err(io(&root))?.into_owned();
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if let Some(hidden) = name.strip_prefix(".wh.") {
                    let target = if hidden == ".wh..opq" {
                        path.parent().map(Path::to_path_buf).unwrap_or_default()
                    } else {
                        path.with_file_name(hidden)
                    };
                    let Some(target) = inside(&root, &target) else {
                        return Err(OciError::Malformed(format!(
                            "layer {}: whiteout {} points outside the image",
                            layer.digest.short(),
                            path.display()
                        )));
                    };
                    if hidden == ".wh..opq" {
                        empty_dir(&target).map_err(io(&target))?;
                    } else {
                        remove(&target).map_err(io(&target))?;
                    }
                    continue;
                }
                // Device nodes cannot be made without root; a static service does not need them.
                if matches!(
                    entry.header().entry_type(),
                    tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo
                ) {
                    continue;
                }
                if inside(&root, &path).is_none() {
                    return Err(OciError::Malformed(format!(
                        "layer {}: {} points outside the image",
                        layer.digest.short(),
                        path.display()
                    )));
                }
                entry.unpack_in(&root).map_err(io(&root))?;
            }
        }
        Ok(())
    }
}

/// `root` joined with the relative `path`, if every component is a plain name and no directory
/// on the way is a symbolic link (which could lead anywhere). `root` is canonical.
fn inside(root: &Path, path: &Path) -> Option<std::path::PathBuf> {
    use std::path::Component;
    let mut at = root.to_path_buf();
    let mut parts = path.components().peekable();
    while let Some(part) = parts.next() {
        match part {
            // A leading `/` means the image's root, as tar itself reads it.
            Component::CurDir | Component::RootDir => continue,
            Component::Normal(name) => at.push(name),
            Component::ParentDir | Component::Prefix(_) => return None,
        }
        // Every directory we pass through must be a real directory (or not exist yet).
        if parts.peek().is_some()
            && std::fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink())
        {
            return None;
        }
    }
    Some(at)
}

/// Removes a file, a link (not what it points to) or a whole directory; absent is fine.
fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
    }
}

/// Removes what a directory holds, keeping the directory (an opaque whiteout).
fn empty_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
        Ok(m) if !m.is_dir() => return Ok(()),
        Ok(_) => {}
    }
    for entry in std::fs::read_dir(dir)? {
        remove(&entry?.path())?;
    }
    Ok(())
}

/// A descriptor's digest, checked.
fn descriptor_digest(d: &Value) -> Result<Digest, OciError> {
    let text = d["digest"]
        .as_str()
        .ok_or_else(|| OciError::Malformed("descriptor without digest".into()))?;
    Digest::parse(text).map_err(|e| OciError::Malformed(e.to_string()))
}

enum Store {
    Dir(std::path::PathBuf),
    Archive(BTreeMap<String, Vec<u8>>),
}

impl Store {
    fn read(&self, name: &str) -> Result<Option<Vec<u8>>, OciError> {
        match self {
            Store::Dir(dir) => {
                let path = dir.join(name);
                match std::fs::read(&path) {
                    Ok(b) => Ok(Some(b)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(io(&path)(e)),
                }
            }
            Store::Archive(files) => Ok(files.get(name).cloned()),
        }
    }

    fn blob(&self, d: &Value) -> Result<Blob, OciError> {
        let named = descriptor_digest(d)?;
        let media = d["mediaType"].as_str().unwrap_or_default().to_string();
        let data = self
            .read(&format!("blobs/sha256/{}", named.hex()))?
            .ok_or_else(|| OciError::MissingBlob(named.to_string()))?;
        Blob::verified(&named, &media, data)
    }
}

fn read_archive(path: &Path) -> Result<BTreeMap<String, Vec<u8>>, OciError> {
    let file = std::fs::File::open(path).map_err(io(path))?;
    if file.metadata().map_err(io(path))?.len() > MAX_ARCHIVE_BYTES {
        return Err(OciError::TooLarge {
            path: path.display().to_string(),
        });
    }
    let mut files = BTreeMap::new();
    let mut archive = tar::Archive::new(file);
    for entry in archive.entries().map_err(io(path))? {
        let mut entry = entry.map_err(io(path))?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let name = entry
            .path()
            .map_err(io(path))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).map_err(io(path))?;
        files.insert(name, data);
    }
    Ok(files)
}

/// Follows an index down to the manifest for `arch`.
fn pick(store: &Store, index: &Value, arch: Architecture, depth: u8) -> Result<Image, OciError> {
    if depth > 3 {
        return Err(OciError::Malformed("indexes nested too deep".into()));
    }
    let manifests = index["manifests"]
        .as_array()
        .ok_or_else(|| OciError::Malformed("index without manifests".into()))?;
    let candidates: Vec<&Value> = manifests
        .iter()
        // Attestations (buildx) are manifests for platform unknown/unknown.
        .filter(|m| m["platform"]["architecture"].as_str() != Some("unknown"))
        .collect();
    let chosen = candidates
        .iter()
        .find(|m| m["platform"]["architecture"].as_str() == Some(arch.oci()))
        .or_else(|| candidates.iter().find(|m| m["platform"].is_null()))
        .or(candidates.first())
        .ok_or_else(|| OciError::Malformed("the index lists no image".into()))?;
    let blob = store.blob(chosen)?;
    let media = if blob.media_type.is_empty() {
        serde_json::from_slice::<Value>(&blob.data)
            .ok()
            .and_then(|v| v["mediaType"].as_str().map(str::to_string))
            .unwrap_or_else(|| MANIFEST_V1.to_string())
    } else {
        blob.media_type.clone()
    };
    let parsed: Value =
        serde_json::from_slice(&blob.data).map_err(|e| OciError::Malformed(e.to_string()))?;
    if media == INDEX_V1 || media == DOCKER_LIST_V2 {
        return pick(store, &parsed, arch, depth + 1);
    }
    let config = store.blob(&parsed["config"])?;
    let layers = parsed["layers"]
        .as_array()
        .ok_or_else(|| OciError::Malformed("manifest without layers".into()))?
        .iter()
        .map(|d| store.blob(d))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Image {
        manifest: Blob {
            media_type: media,
            ..blob
        },
        config,
        layers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binary(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("tickstream");
        std::fs::write(&path, b"#!/bin/sh\necho not really\n").expect("write");
        path
    }

    #[test]
    fn the_same_binary_makes_the_same_digest_and_unpacks_runnable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = binary(dir.path());
        let labels = BTreeMap::from([(
            "org.opencontainers.image.revision".to_string(),
            "abc".to_string(),
        )]);
        let a = Image::from_binary(&bin, Architecture::X86_64, 8080, &labels).expect("image");
        let b = Image::from_binary(&bin, Architecture::X86_64, 8080, &labels).expect("image");
        assert_eq!(a.manifest.digest, b.manifest.digest);
        assert_eq!(a.command(), ["/usr/local/bin/tickstream"]);
        assert_eq!(a.architecture().as_deref(), Some("amd64"));
        let err = a
            .check_architecture(Architecture::Arm64)
            .expect_err("wrong arch");
        assert!(err.to_string().contains("exec format error"), "{err}");

        let root = dir.path().join("root");
        a.unpack(&root).expect("unpack");
        let unpacked = root.join(BINARY_PATH);
        assert_eq!(
            std::fs::read(&unpacked).expect("binary"),
            std::fs::read(&bin).expect("binary")
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&unpacked)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
    }

    #[test]
    fn layouts_round_trip_and_corruption_is_caught() {
        let dir = tempfile::tempdir().expect("tempdir");
        let image = Image::from_binary(
            &binary(dir.path()),
            Architecture::Arm64,
            8080,
            &BTreeMap::new(),
        )
        .expect("image");
        let layout = dir.path().join("layout");
        let blobs = layout.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).expect("mkdir");
        for b in [&image.manifest, &image.config]
            .into_iter()
            .chain(&image.layers)
        {
            std::fs::write(blobs.join(b.digest.hex()), &b.data).expect("blob");
        }
        let index = json!({"schemaVersion": 2, "manifests": [{
            "mediaType": MANIFEST_V1, "digest": image.manifest.digest, "size": image.manifest.data.len(),
            "platform": {"architecture": "arm64", "os": "linux"}}]});
        std::fs::write(layout.join("index.json"), index.to_string()).expect("index");
        let read = Image::from_layout(&layout, Architecture::Arm64).expect("layout");
        assert_eq!(read.manifest.digest, image.manifest.digest);
        assert!(matches!(
            Image::from_layout(&layout, Architecture::X86_64),
            Err(OciError::WrongArchitecture { .. })
        ));

        // The same layout as a tar archive.
        let archive = dir.path().join("image.tar");
        let mut tar = tar::Builder::new(std::fs::File::create(&archive).expect("create"));
        tar.append_dir_all(".", &layout).expect("tar");
        tar.finish().expect("finish");
        drop(tar);
        assert_eq!(
            Image::from_layout(&archive, Architecture::Arm64)
                .expect("archive")
                .manifest
                .digest,
            image.manifest.digest
        );

        std::fs::write(blobs.join(image.layers[0].digest.hex()), b"tampered").expect("tamper");
        assert!(matches!(
            Image::from_layout(&layout, Architecture::Arm64),
            Err(OciError::DigestMismatch { .. })
        ));
        assert!(matches!(
            Image::from_layout(dir.path(), Architecture::Arm64),
            Err(OciError::NotALayout(_))
        ));
    }

    /// A layer from raw entries: (path as written in the header, kind, link target or data).
    fn layer(entries: &[(&str, tar::EntryType, &[u8])]) -> Blob {
        let mut out = tar::Builder::new(Vec::new());
        for (path, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            // Written byte by byte: the builder itself refuses `..`, an attacker's tar would not.
            let name = &mut h.as_gnu_mut().expect("gnu header").name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            if *kind == tar::EntryType::Symlink {
                h.set_link_name(std::str::from_utf8(data).expect("utf-8"))
                    .expect("link");
                h.set_size(0);
                h.set_cksum();
                out.append(&h, std::io::empty()).expect("append");
            } else {
                h.set_size(data.len() as u64);
                h.set_cksum();
                out.append(&h, *data).expect("append");
            }
        }
        Blob::new(
            "application/vnd.oci.image.layer.v1.tar",
            out.into_inner().expect("tar"),
        )
    }

    fn image_of(layers: Vec<Blob>) -> Image {
        Image::assemble(Blob::new(CONFIG_V1, b"{}".to_vec()), layers)
    }

    #[test]
    fn whiteouts_and_entries_never_reach_outside_the_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).expect("mkdir");
        std::fs::write(outside.join("victim"), b"keep me").expect("victim");
        let root = dir.path().join("root");
        let file = tar::EntryType::Regular;

        // A whiteout that climbs out of the root.
        let climb = image_of(vec![layer(&[("../outside/.wh.victim", file, b"")])]);
        assert!(climb.unpack(&root).is_err());
        // A whiteout through a symbolic link an earlier layer planted.
        let link = image_of(vec![
            layer(&[(
                "escape",
                tar::EntryType::Symlink,
                outside.to_str().expect("utf-8").as_bytes(),
            )]),
            layer(&[("escape/.wh.victim", file, b"")]),
        ]);
        assert!(link.unpack(&dir.path().join("root2")).is_err());
        // An entry that climbs out.
        let write = image_of(vec![layer(&[("../outside/planted", file, b"x")])]);
        assert!(write.unpack(&dir.path().join("root3")).is_err());
        assert_eq!(
            std::fs::read(outside.join("victim")).expect("still there"),
            b"keep me"
        );
        assert!(!outside.join("planted").exists());
    }

    #[test]
    fn whiteouts_remove_what_earlier_layers_left() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        let file = tar::EntryType::Regular;
        let image = image_of(vec![
            layer(&[
                ("etc/a", file, b"a"),
                ("etc/b", file, b"b"),
                ("var/old", file, b"o"),
            ]),
            layer(&[
                ("etc/.wh.a", file, b""),
                ("var/.wh..wh..opq", file, b""),
                ("var/new", file, b"n"),
            ]),
        ]);
        image.unpack(&root).expect("unpack");
        assert!(!root.join("etc/a").exists(), "a whiteout removes");
        assert!(root.join("etc/b").exists());
        assert!(
            !root.join("var/old").exists(),
            "an opaque whiteout empties the directory"
        );
        assert_eq!(std::fs::read(root.join("var/new")).expect("new"), b"n");
    }

    mod fuzz {
        //! Remote input, fuzzed: manifests and blobs as a registry may send them, and layers
        //! an attacker may have built. `PROPTEST_CASES` sets the count (300 by default: each
        //! unpack case touches the file system).
        use super::*;
        use proptest::prelude::*;
        use proptest::test_runner::FileFailurePersistence;

        fn config(default: u32) -> ProptestConfig {
            ProptestConfig {
                cases: std::env::var("PROPTEST_CASES")
                    .ok()
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(default),
                failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/src/oci.proptest-regressions"
                )))),
                ..ProptestConfig::default()
            }
        }

        /// Entry paths built from the pieces that matter: `..`, `.`, whiteouts, a name an
        /// earlier entry may have made a link, and absolute paths.
        fn path() -> impl Strategy<Value = String> {
            (
                any::<bool>(),
                prop::collection::vec(
                    prop::sample::select(vec![
                        "a",
                        "b",
                        "..",
                        ".",
                        ".wh.a",
                        ".wh.b",
                        ".wh..wh..opq",
                        "link",
                        "outside",
                    ]),
                    1..5,
                ),
            )
                .prop_map(|(absolute, parts)| {
                    format!("{}{}", if absolute { "/" } else { "" }, parts.join("/"))
                })
        }

        fn entry(
            outside: &'static str,
        ) -> impl Strategy<Value = (String, tar::EntryType, Vec<u8>)> {
            (
                path(),
                prop::sample::select(vec![
                    tar::EntryType::Regular,
                    tar::EntryType::Directory,
                    tar::EntryType::Symlink,
                ]),
                prop::sample::select(vec![outside, "..", "../..", "a", "/", "link", "../outside"]),
            )
                .prop_map(|(path, kind, target)| {
                    let data = match kind {
                        tar::EntryType::Symlink => target.as_bytes().to_vec(),
                        tar::EntryType::Regular => b"data".to_vec(),
                        _ => Vec::new(),
                    };
                    (path, kind, data)
                })
        }

        /// Every file under `dir` with its content (links as their target).
        fn snapshot(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
            let mut out = Vec::new();
            let mut stack = vec![dir.to_path_buf()];
            while let Some(d) = stack.pop() {
                let Ok(entries) = std::fs::read_dir(&d) else {
                    continue;
                };
                for e in entries.flatten() {
                    let p = e.path();
                    let meta = std::fs::symlink_metadata(&p).expect("metadata");
                    if meta.is_dir() {
                        stack.push(p.clone());
                        out.push((p, Vec::new()));
                    } else if meta.file_type().is_symlink() {
                        let t = std::fs::read_link(&p).expect("link");
                        out.push((p, t.to_string_lossy().as_bytes().to_vec()));
                    } else {
                        out.push((p.clone(), std::fs::read(&p).expect("read")));
                    }
                }
            }
            out.sort();
            out
        }

        proptest! {
            #![proptest_config(config(300))]

            /// Whatever the layers hold, unpacking succeeds or is refused, and nothing
            /// outside the root is written, changed or removed.
            #[test]
            fn layers_never_reach_outside_the_root(
                layers in prop::collection::vec(prop::collection::vec(entry("/tmp/tickstream-fuzz-outside"), 1..6), 1..4),
            ) {
                let dir = tempfile::tempdir().expect("tempdir");
                let outside = dir.path().join("outside");
                std::fs::create_dir_all(outside.join("a")).expect("mkdir");
                std::fs::write(outside.join("a/victim"), b"keep me").expect("victim");
                std::fs::write(outside.join("b"), b"keep me too").expect("victim");
                // The symlink target the entries name: the same kind of directory, elsewhere.
                let before = snapshot(dir.path());
                let root = dir.path().join("root");
                let blobs = layers
                    .iter()
                    .map(|l| {
                        let refs: Vec<(&str, tar::EntryType, &[u8])> =
                            l.iter().map(|(p, k, d)| (p.as_str(), *k, d.as_slice())).collect();
                        layer(&refs)
                    })
                    .collect();
                let _ = image_of(blobs).unpack(&root);
                let after: Vec<_> = snapshot(dir.path())
                    .into_iter()
                    .filter(|(p, _)| !p.starts_with(&root))
                    .collect();
                prop_assert_eq!(after, before);
                prop_assert!(!std::path::Path::new("/tmp/tickstream-fuzz-outside").exists());
            }

            /// A manifest and blobs as a registry may send them: an image or a typed error.
            #[test]
            fn any_manifest_is_an_image_or_an_error(
                manifest in prop_oneof![
                    prop::collection::vec(any::<u8>(), 0..200),
                    r#"\{"schemaVersion":2,"config":\{"digest":"sha256:[0-9a-f]{0,64}","mediaType":".{0,10}"\},"layers":\[(\{"digest":".{0,70}"\},?){0,3}\]\}"#
                        .prop_map(String::into_bytes),
                ],
                blob in prop::option::of(prop::collection::vec(any::<u8>(), 0..64)),
            ) {
                let blob_clone = blob.clone();
                let _ = Image::from_parts(Blob::new(MANIFEST_V1, manifest), |_| blob_clone.clone());
            }
        }
    }
}
