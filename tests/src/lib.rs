//! End-to-end tests live in `tests/`; see `tests/container.rs` and `tests/conformance/`.
//! What they share lives here.

use std::path::PathBuf;

/// The static musl release binary that ships, named by `TICKSTREAM_STATIC_BIN` (`scripts/check`
/// builds it and sets it); without it a test fails, naming the command to run.
pub fn static_binary() -> PathBuf {
    let path = std::env::var_os("TICKSTREAM_STATIC_BIN").map(PathBuf::from).unwrap_or_else(|| {
        panic!(
            "TICKSTREAM_STATIC_BIN is not set: run ./scripts/check, or build with \
             `cargo build --release --target x86_64-unknown-linux-musl -p tickstream` and point it there"
        )
    });
    assert!(path.is_file(), "{} does not exist", path.display());
    path
}
