//! How chunks are programmed, fixed by the storage's type so that a firmware links only the
//! code of its own mode (write-once recovery alone is about 1.4 KB of a Cortex-M image).
//!
//! | type | opened with | write units |
//! |---|---|---|
//! | [`Multiwrite`] | `open` (flash that is `MultiwriteNorFlash`) | rewritten as chunks that share one arrive |
//! | [`WriteOnce`] | `open_write_once` (any `NorFlash`) | programmed once between erases |
//! | [`EitherMode`] | `open_either` | either, chosen at run time; both are linked (tests, tools) |

/// A write mode: [`Multiwrite`], [`WriteOnce`] or [`EitherMode`].
pub trait WriteMode: Copy + core::fmt::Debug + sealed::Sealed {
    /// True if every write unit is programmed at most once between erases.
    fn write_once(self) -> bool;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Multiwrite {}
    impl Sealed for super::WriteOnce {}
    impl Sealed for super::EitherMode {}
}

/// Write units may be programmed again (clearing more bits); needs `MultiwriteNorFlash`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Multiwrite;

/// Each write unit is programmed once between erases: any `NorFlash`, ECC flash included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOnce;

/// The mode chosen when the storage is opened (`true`: write-once), for code that runs both
/// on one flash type. Both modes' code is linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EitherMode(pub bool);

impl WriteMode for Multiwrite {
    fn write_once(self) -> bool {
        false
    }
}

impl WriteMode for WriteOnce {
    fn write_once(self) -> bool {
        true
    }
}

impl WriteMode for EitherMode {
    fn write_once(self) -> bool {
        self.0
    }
}
