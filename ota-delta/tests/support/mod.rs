//! Storage doubles that check the applier's contract, and image pairs for property tests.
#![allow(
    dead_code,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used
)]

use ota_delta::{NewImage, OldImage};
use proptest::prelude::*;

/// What a storage double refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The applier asked for OLD bytes outside OLD.
    OldOutside,
    /// The applier wrote past the capacity or left a gap.
    NewOutside,
    /// The applier read NEW bytes it had not written.
    ReadUnwritten,
    /// A simulated power cut.
    PowerCut,
}

/// OLD in memory; records how many bytes were read.
pub struct Old<'a> {
    pub data: &'a [u8],
    pub bytes_read: u64,
}

impl<'a> Old<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Old {
            data,
            bytes_read: 0,
        }
    }
}

impl OldImage for Old<'_> {
    type Error = Fault;
    fn read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), Fault> {
        let s = offset as usize;
        let src = self.data.get(s..s + buf.len()).ok_or(Fault::OldOutside)?;
        buf.copy_from_slice(src);
        self.bytes_read += buf.len() as u64;
        Ok(())
    }
}

/// NEW as a flash slot of `capacity` bytes: checks that writes stay inside, that reads only see
/// written bytes, and that a byte written twice (after a resume) gets the same value. It can
/// cut power after a number of writes.
pub struct Flash {
    pub data: Vec<u8>,
    pub written: Vec<bool>,
    pub capacity: usize,
    pub writes: u64,
    /// Fail every write once this many have succeeded.
    pub cut_after: Option<u64>,
    /// A rewrite that changed a byte: (offset, old, new).
    pub changed: Option<(usize, u8, u8)>,
}

impl Flash {
    pub fn new(capacity: usize) -> Self {
        Flash {
            data: vec![0xff; capacity],
            written: vec![false; capacity],
            capacity,
            writes: 0,
            cut_after: None,
            changed: None,
        }
    }

    /// The image: the written prefix.
    pub fn image(&self, len: usize) -> &[u8] {
        &self.data[..len]
    }

    pub fn any_written(&self) -> bool {
        self.written.iter().any(|&w| w)
    }
}

impl NewImage for Flash {
    type Error = Fault;
    fn write(&mut self, offset: u32, data: &[u8]) -> Result<(), Fault> {
        if let Some(n) = self.cut_after {
            if self.writes >= n {
                return Err(Fault::PowerCut);
            }
        }
        let s = offset as usize;
        if s + data.len() > self.capacity {
            return Err(Fault::NewOutside);
        }
        for (i, &b) in data.iter().enumerate() {
            let at = s + i;
            if self.written[at] && self.data[at] != b && self.changed.is_none() {
                self.changed = Some((at, self.data[at], b));
            }
            self.data[at] = b;
            self.written[at] = true;
        }
        self.writes += 1;
        Ok(())
    }

    fn read_new(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), Fault> {
        let s = offset as usize;
        if s + buf.len() > self.capacity || !self.written[s..s + buf.len()].iter().all(|&w| w) {
            return Err(Fault::ReadUnwritten);
        }
        buf.copy_from_slice(&self.data[s..s + buf.len()]);
        Ok(())
    }
}

/// An edit that turns one image into the next.
#[derive(Debug, Clone)]
pub enum Edit {
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    Delete {
        at: usize,
        len: usize,
    },
    Move {
        from: usize,
        len: usize,
        to: usize,
    },
    Repeat {
        from: usize,
        len: usize,
        times: usize,
        to: usize,
    },
    /// Adds `delta` to a little-endian word every `stride` bytes (relocated pointers).
    Shift {
        from: usize,
        stride: usize,
        delta: u8,
    },
    Overwrite {
        at: usize,
        bytes: Vec<u8>,
    },
}

fn clamp(at: usize, len: usize) -> usize {
    if len == 0 {
        0
    } else {
        at % (len + 1)
    }
}

pub fn apply_edit(img: &mut Vec<u8>, e: &Edit) {
    let n = img.len();
    match e {
        Edit::Insert { at, bytes } => {
            let at = clamp(*at, n);
            img.splice(at..at, bytes.iter().copied());
        }
        Edit::Delete { at, len } => {
            let at = clamp(*at, n);
            let end = (at + len).min(n);
            img.drain(at..end);
        }
        Edit::Move { from, len, to } => {
            let from = clamp(*from, n);
            let end = (from + len).min(n);
            let block: Vec<u8> = img.drain(from..end).collect();
            let to = clamp(*to, img.len());
            img.splice(to..to, block);
        }
        Edit::Repeat {
            from,
            len,
            times,
            to,
        } => {
            let from = clamp(*from, n);
            let end = (from + len).min(n);
            let block: Vec<u8> = img[from..end].repeat(*times);
            let to = clamp(*to, n);
            img.splice(to..to, block);
        }
        Edit::Shift {
            from,
            stride,
            delta,
        } => {
            let mut at = clamp(*from, n);
            while at + 4 <= img.len() {
                let w = u32::from_le_bytes(img[at..at + 4].try_into().unwrap());
                img[at..at + 4].copy_from_slice(&w.wrapping_add(u32::from(*delta)).to_le_bytes());
                at += stride.max(&4);
            }
        }
        Edit::Overwrite { at, bytes } => {
            let at = clamp(*at, n);
            for (i, &b) in bytes.iter().enumerate() {
                if let Some(x) = img.get_mut(at + i) {
                    *x = b;
                }
            }
        }
    }
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..200))
            .prop_map(|(at, bytes)| Edit::Insert { at, bytes }),
        (any::<usize>(), 1usize..300).prop_map(|(at, len)| Edit::Delete { at, len }),
        (any::<usize>(), 1usize..400, any::<usize>()).prop_map(|(from, len, to)| Edit::Move {
            from,
            len,
            to
        }),
        (any::<usize>(), 1usize..100, 1usize..6, any::<usize>()).prop_map(
            |(from, len, times, to)| Edit::Repeat {
                from,
                len,
                times,
                to
            }
        ),
        (any::<usize>(), 8usize..64, 1u8..=255).prop_map(|(from, stride, delta)| Edit::Shift {
            from,
            stride,
            delta
        }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Edit::Overwrite { at, bytes }),
    ]
}

/// An image with the texture of firmware: random stretches, repeated blocks and fill.
fn image() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            3 => prop::collection::vec(any::<u8>(), 1..300),
            1 => (any::<u8>(), 1usize..200).prop_map(|(b, n)| vec![b; n]),
            1 => (prop::collection::vec(any::<u8>(), 1..16), 2usize..20)
                .prop_map(|(unit, n)| unit.repeat(n)),
        ],
        0..12,
    )
    .prop_map(|parts| parts.concat())
}

/// OLD and NEW: NEW is OLD after some edits, or unrelated, or empty.
pub fn pair() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    prop_oneof![
        6 => (image(), prop::collection::vec(edit(), 0..8)).prop_map(|(old, edits)| {
            let mut new = old.clone();
            for e in &edits {
                apply_edit(&mut new, e);
            }
            (old, new)
        }),
        1 => (image(), image()),
        1 => image().prop_map(|i| (Vec::new(), i)),
        1 => image().prop_map(|i| (i, Vec::new())),
    ]
}
