//! The applier's whole state between two patch chunks, and its persisted form.

use crate::bits::{Bits, NO_PREFIX};
use crate::crc32;
use crate::format::{Params, MAX_IMAGE};

/// Length of [`State::to_bytes`].
pub const STATE_LEN: usize = 58;
/// Version of the persisted state layout.
pub const STATE_VERSION: u8 = 1;

/// Where the applier is in the patch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Phase {
    /// Reading header byte `step`.
    Header = 0,
    /// Reading an operation's kind (`step` 1: the previous one was a literal run).
    Kind = 1,
    /// Reading a `COPY`'s fields (`step` 0: diagonal, 1: sign, 2: length, 3: corrections).
    Copy = 2,
    /// Inside a `COPY`: `a` corrections left, `b` its end in NEW (`step` 0: gap, 1: delta
    /// flag, 2: delta byte).
    Correct = 3,
    /// Reading a literal run (`step` 0: length; 1: `a` bytes left).
    Literal = 4,
    /// Reading a `MATCH` (`step` 0: distance; 1: length, `a` the distance).
    Match = 5,
    /// NEW is complete.
    Done = 6,
}

impl Phase {
    fn from_u8(n: u8) -> Option<Phase> {
        Some(match n {
            0 => Phase::Header,
            1 => Phase::Kind,
            2 => Phase::Copy,
            3 => Phase::Correct,
            4 => Phase::Literal,
            5 => Phase::Match,
            6 => Phase::Done,
            _ => return None,
        })
    }
}

/// Everything the applier knows between two patch chunks: persist [`State::to_bytes`] with the
/// resume record after each chunk, and resume with [`State::from_bytes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct State {
    pub(crate) phase: Phase,
    pub(crate) step: u8,
    pub(crate) last_delta: u8,
    pub(crate) params: [u8; 4],
    pub(crate) bits: Bits,
    pub(crate) old_size: u32,
    pub(crate) new_size: u32,
    /// NEW bytes written.
    pub(crate) written: u32,
    /// Patch bytes consumed.
    pub(crate) consumed: u32,
    /// OLD position minus NEW position, two's complement.
    pub(crate) diag: i32,
    pub(crate) a: u32,
    pub(crate) b: u32,
    /// CRC-32 register over NEW as written.
    pub(crate) crc: u32,
    /// NEW's CRC-32 from the header.
    pub(crate) new_crc: u32,
}

/// Why a persisted state is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// Written by another layout version.
    #[error("applier state version {0} is not supported")]
    Version(u8),
    /// The checksum does not match: the record is torn or corrupt.
    #[error("applier state checksum mismatch")]
    Checksum,
    /// The fields contradict each other.
    #[error("applier state is inconsistent")]
    Inconsistent,
}

impl State {
    /// The state before the first patch byte.
    pub(crate) const START: State = State {
        phase: Phase::Header,
        step: 0,
        last_delta: 0,
        params: [0; 4],
        bits: Bits::EMPTY,
        old_size: 0,
        new_size: 0,
        written: 0,
        consumed: 0,
        diag: 0,
        a: 0,
        b: 0,
        crc: crc32::INIT,
        new_crc: 0,
    };

    /// The fixed-size persisted form: a version byte, the fields, and a CRC-32 of what precedes.
    pub fn to_bytes(&self) -> [u8; STATE_LEN] {
        let mut out = [0u8; STATE_LEN];
        let mut w = Cursor {
            buf: &mut out,
            at: 0,
        };
        w.put(&[
            STATE_VERSION,
            self.phase as u8,
            self.step,
            self.last_delta,
            self.bits.n,
            self.bits.ez,
        ]);
        w.put(&self.params);
        w.put(&self.bits.acc.to_le_bytes());
        for v in [
            self.old_size,
            self.new_size,
            self.written,
            self.consumed,
            self.diag as u32,
            self.a,
            self.b,
            self.crc,
            self.new_crc,
        ] {
            w.put(&v.to_le_bytes());
        }
        let body = w.at;
        let sum = crc32::checksum(out.get(..body).unwrap_or(&[]));
        if let Some(dst) = out.get_mut(body..body + 4) {
            dst.copy_from_slice(&sum.to_le_bytes());
        }
        out
    }

    /// Parses a persisted state, checking its version, checksum and consistency.
    pub fn from_bytes(bytes: &[u8; STATE_LEN]) -> Result<State, StateError> {
        let (body, sum) = bytes.split_at(STATE_LEN - 4);
        let mut r = Reader { buf: body, at: 0 };
        let [version, phase, step, last_delta, n, ez] = r.array::<6>();
        if version != STATE_VERSION {
            return Err(StateError::Version(version));
        }
        if crc32::checksum(body).to_le_bytes() != sum {
            return Err(StateError::Checksum);
        }
        let params = r.array::<4>();
        let acc = u64::from_le_bytes(r.array::<8>());
        let mut word = || u32::from_le_bytes(r.array::<4>());
        let s = State {
            phase: Phase::from_u8(phase).ok_or(StateError::Inconsistent)?,
            step,
            last_delta,
            params,
            bits: Bits { acc, n, ez },
            old_size: word(),
            new_size: word(),
            written: word(),
            consumed: word(),
            diag: word() as i32,
            a: word(),
            b: word(),
            crc: word(),
            new_crc: word(),
        };
        if s.consistent() {
            Ok(s)
        } else {
            Err(StateError::Inconsistent)
        }
    }

    /// Invariants that hold at every chunk boundary; the applier also re-checks every bound it
    /// relies on, so a state that passes here yet lies cannot make it misbehave.
    fn consistent(&self) -> bool {
        let bits_ok = self.bits.n <= 64
            && (self.bits.n == 64 || self.bits.acc >> self.bits.n == 0)
            && (self.bits.ez == NO_PREFIX || self.bits.ez <= 31);
        let fields_ok = match self.phase {
            Phase::Header => {
                usize::from(self.step) < crate::format::HEADER_LEN && self.written == 0
            }
            _ => {
                self.step <= 3
                    && self.old_size <= MAX_IMAGE
                    && self.new_size <= MAX_IMAGE
                    && self.written <= self.new_size
                    && Params::from_bytes(self.params).is_some()
            }
        };
        bits_ok && fields_ok
    }

    /// NEW bytes written so far.
    pub fn written(&self) -> u32 {
        self.written
    }

    /// Patch bytes consumed so far.
    pub fn consumed(&self) -> u32 {
        self.consumed
    }

    /// NEW's size, once the header has been read.
    pub fn new_size(&self) -> Option<u32> {
        (self.phase != Phase::Header).then_some(self.new_size)
    }

    /// Whether NEW is complete.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }
}

struct Cursor<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Cursor<'_> {
    fn put(&mut self, bytes: &[u8]) {
        if let Some(dst) = self.buf.get_mut(self.at..self.at + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
        self.at += bytes.len();
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        if let Some(src) = self.buf.get(self.at..self.at + N) {
            out.copy_from_slice(src);
        }
        self.at += N;
        out
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_damage() {
        let mut s = State::START;
        s.phase = Phase::Correct;
        s.step = 2;
        s.params = [0x21, 0x43, 0x65, 0x07];
        s.bits = Bits {
            acc: 0x1234,
            n: 13,
            ez: 4,
        };
        s.old_size = 1000;
        s.new_size = 2000;
        s.written = 1500;
        s.consumed = 77;
        s.diag = -12;
        s.a = 3;
        s.b = 1600;
        s.crc = 0xabcd_ef01;
        s.new_crc = 5;
        let b = s.to_bytes();
        assert_eq!(State::from_bytes(&b), Ok(s));
        assert_eq!(
            State::from_bytes(&State::START.to_bytes()),
            Ok(State::START)
        );
        for i in 0..STATE_LEN {
            let mut bad = b;
            bad[i] ^= 0x10;
            assert!(State::from_bytes(&bad).is_err(), "byte {i} flipped");
        }
        let mut lie = s;
        lie.written = 2001;
        assert_eq!(
            State::from_bytes(&lie.to_bytes()),
            Err(StateError::Inconsistent)
        );
    }

    #[test]
    fn sizes() {
        println!(
            "State: {} bytes in RAM, {} bytes persisted",
            core::mem::size_of::<State>(),
            STATE_LEN
        );
        assert!(core::mem::size_of::<State>() <= 64);
    }
}
