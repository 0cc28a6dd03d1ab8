//! End-to-end tests live in `tests/`; see `tests/container.rs`.
