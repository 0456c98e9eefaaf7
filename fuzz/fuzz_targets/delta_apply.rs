//! The delta applier on hostile patches: arbitrary bytes as a whole patch, and arbitrary bodies
//! behind a valid header for the fixed OLD (fuzzer-chosen NEW size and code parameters), fed in
//! fuzzer-sized chunks with the state persisted and restored between every two. It must never
//! read outside OLD, write outside the slot or past the declared size, read back unwritten
//! bytes, do more I/O than the slot's size allows, or panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ota_delta::format::{Header, Params};
use ota_delta::{source_of, Applier, NewImage, OldImage, State};

const CAPACITY: usize = 4096;

fn old_image() -> Vec<u8> {
    (0..1500u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 9) as u8)
        .collect()
}

struct Old<'a> {
    data: &'a [u8],
    io: usize,
}

impl OldImage for Old<'_> {
    type Error = ();
    fn read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), ()> {
        let s = offset as usize;
        let src = self
            .data
            .get(s..s + buf.len())
            .unwrap_or_else(|| panic!("read outside OLD: {s}+{}", buf.len()));
        buf.copy_from_slice(src);
        self.io += buf.len();
        Ok(())
    }
}

struct Slot {
    data: Vec<u8>,
    written: usize,
    io: usize,
    /// Where the next write must start (writes are contiguous within a feed).
    next: Option<usize>,
}

impl NewImage for Slot {
    type Error = ();
    fn write(&mut self, offset: u32, data: &[u8]) -> Result<(), ()> {
        let s = offset as usize;
        assert!(s + data.len() <= CAPACITY, "write outside the slot");
        if let Some(n) = self.next {
            assert_eq!(s, n, "writes out of order");
        }
        self.data[s..s + data.len()].copy_from_slice(data);
        self.written = self.written.max(s + data.len());
        self.next = Some(s + data.len());
        self.io += data.len();
        Ok(())
    }
    fn read_new(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), ()> {
        let s = offset as usize;
        assert!(s + buf.len() <= self.written, "read back unwritten bytes");
        buf.copy_from_slice(&self.data[s..s + buf.len()]);
        self.io += buf.len();
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let [mode, chunk, n0, n1, p0, p1, p2, p3, body @ ..] = data else {
        return;
    };
    let old = old_image();
    let source = source_of(&old);
    let patch: Vec<u8> = if mode & 1 == 0 {
        data[1..].to_vec()
    } else {
        let Some(params) = Params::from_bytes([*p0, *p1, *p2, *p3 & 0x3f]) else {
            return;
        };
        let header = Header {
            old_size: source.len,
            old_sha256: source.sha256,
            new_size: u32::from(u16::from_le_bytes([*n0, *n1])) % 8192,
            new_crc32: 0,
            params,
        };
        let mut p = header.to_bytes().to_vec();
        p.extend_from_slice(body);
        p
    };
    let declared = Header::parse(&patch).map(|h| h.new_size as usize).ok();
    let mut old_img = Old { data: &old, io: 0 };
    let mut slot = Slot {
        data: vec![0xff; CAPACITY],
        written: 0,
        io: 0,
        next: None,
    };
    let mut applier = Applier::new(source, CAPACITY as u32);
    for piece in patch.chunks(usize::from(*chunk).max(1)) {
        slot.next = Some(applier.written() as usize);
        let r = applier.feed(piece, &mut old_img, &mut slot);
        let saved = applier.state().to_bytes();
        let state = State::from_bytes(&saved).expect("a state the applier made loads");
        assert_eq!(state, applier.state());
        applier = Applier::resume(state, source, CAPACITY as u32).expect("and resumes");
        if r.is_err() {
            break;
        }
    }
    let _ = applier.finish::<()>();
    if let Some(d) = declared {
        assert!(slot.written <= d, "wrote past the declared size");
    }
    // Bounded work: every OLD byte read and every NEW byte read back becomes a NEW byte.
    assert!(
        old_img.io <= CAPACITY && slot.io <= 3 * CAPACITY,
        "too much I/O"
    );
});
