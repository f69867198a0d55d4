//! Which ONNX Runtime releases load a set of training artifacts, and how a set is written for
//! one of them (`--target-ort`). Releases read only some artifacts: each reads one checkpoint
//! format, models up to one IR version and opsets up to its own, and has its own operators. The
//! facts per release are tables probed in the releases themselves (data/, written by
//! docs/experiments/ort_releases/make_tables.sh).

pub mod check;
pub mod facts;
pub mod ir;
pub mod releases;
pub mod target;

pub use check::{Runtime, SetView, blocker, runtimes};
pub use releases::{Release, release, release_ids, releases};
