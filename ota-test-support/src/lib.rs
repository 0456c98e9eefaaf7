//! Test support for the OTA workspace: simulators, test doubles and fixtures that the tests,
//! examples, benchmarks and demos share. Not published: the published crates carry no test
//! code, and depend on this crate only as a dev-dependency.
//!
//! | module | what it holds |
//! |---|---|
//! | [`sim`] | a deterministic lossy-link simulator (random or bursty loss, a shared bottleneck in [`sim::bottleneck`]) and a one-wake driver, in simulated time |
//! | [`mem`] | [`MemStorage`]: `ota_core`'s update storage in RAM, patches included |
//! | [`flash`] | [`SimFlash`]: a NOR flash in RAM with power-cut injection; [`FileFlash`]: a NOR flash in a file |
//! | [`fixture`] | a signed release, the server offering it, and the key and verifier to check it |
//!
//! Unit tests inside `ota-core` or `ota-storage` (`#[cfg(test)]` in `src/`) cannot use it: they
//! would link a second copy of the crate under test. Integration tests (`tests/`), examples and
//! doctests can.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod fixture;
pub mod flash;
pub mod mem;
pub mod sim;

pub use flash::{FileFlash, FileFlashError, SimFlash};
pub use mem::{MemError, MemStorage};
