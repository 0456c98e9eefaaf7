//! The streaming patch applier: `no_std`, no allocation, bounded RAM, resumable at any byte.

use crate::bits::Read;
use crate::crc32;
use crate::error::{ApplyError, Malformed, SourceMismatch};
use crate::format::{off, Kind, Params, HEADER_LEN, MAGIC, MAX_IMAGE, MIN_MATCH, VERSION};
use crate::state::{Phase, State, StateError};

/// Size of the applier's work buffer: OLD and NEW bytes pass through it on their way to NEW.
pub const BUF_LEN: usize = 256;

/// Random-access reads of the image the patch applies to (the device's active slot).
pub trait OldImage {
    /// The storage's error.
    type Error;
    /// Fills `buf` with the bytes at `offset`. The applier only asks for bytes inside OLD's size.
    fn read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), Self::Error>;
}

/// Sequential writes of the image the patch rebuilds (the staging slot), and reads of what was
/// already written.
///
/// Within one [`Applier::feed`] the writes are contiguous and in order; after a resume they start
/// again at [`State::written`], which may be before bytes a power cut left behind: those are
/// rewritten with the same values. Writes have any length up to [`BUF_LEN`]; an adapter over
/// flash with a write unit buffers them and must serve `read_new` from that buffer too.
pub trait NewImage {
    /// The storage's error.
    type Error;
    /// Writes `data` at `offset`.
    fn write(&mut self, offset: u32, data: &[u8]) -> Result<(), Self::Error>;
    /// Fills `buf` with bytes already written at `offset` (always below what was written).
    fn read_new(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), Self::Error>;
}

/// The image the caller has and expects the patch to apply to: its size and SHA-256 (a device
/// knows both from the manifest of the image it runs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Source {
    /// OLD's size in bytes.
    pub len: u32,
    /// OLD's SHA-256.
    pub sha256: [u8; 32],
}

/// Where the applier stands after a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// NEW bytes written so far.
    pub written: u32,
    /// NEW's size, once the header has been read.
    pub new_size: Option<u32>,
    /// Patch bytes consumed so far.
    pub consumed: u32,
    /// Whether NEW is complete (then [`Applier::finish`] checks its CRC-32).
    pub done: bool,
}

/// Rebuilds NEW from OLD and a patch fed in chunks, in order.
///
/// Its RAM is [`State`] plus a [`BUF_LEN`]-byte work buffer; between two chunks everything it
/// knows is in [`Applier::state`], so a device persists `state().to_bytes()` with its resume
/// record after each chunk. After a power cut, [`Applier::resume`] from the state saved after
/// chunk *k* − 1 and feeding chunk *k* again writes exactly the same bytes at the same offsets.
///
/// Work per chunk is bounded by the chunk's length plus the NEW bytes it writes, and NEW is
/// never written past its declared size (itself at most the caller's capacity).
pub struct Applier {
    state: State,
    source: Source,
    capacity: u32,
    buf: [u8; BUF_LEN],
}

impl Applier {
    /// An applier at the start of a patch for `source`, which refuses a NEW larger than
    /// `capacity` bytes (the staging slot).
    pub fn new(source: Source, capacity: u32) -> Applier {
        Applier {
            state: State::START,
            source,
            capacity,
            buf: [0; BUF_LEN],
        }
    }

    /// An applier that continues from a state saved after an earlier chunk.
    pub fn resume(state: State, source: Source, capacity: u32) -> Result<Applier, StateError> {
        if state.phase != Phase::Header
            && (state.old_size != source.len || state.new_size > capacity)
        {
            return Err(StateError::Inconsistent);
        }
        Ok(Applier {
            state,
            source,
            capacity,
            buf: [0; BUF_LEN],
        })
    }

    /// The state to persist after a chunk.
    pub fn state(&self) -> State {
        self.state
    }

    /// Where the applier stands.
    pub fn progress(&self) -> Progress {
        Progress {
            written: self.state.written,
            new_size: self.state.new_size(),
            consumed: self.state.consumed,
            done: self.state.is_done(),
        }
    }

    /// NEW's size, once the header has been read.
    pub fn new_size(&self) -> Option<u32> {
        self.state.new_size()
    }

    /// NEW bytes written so far.
    pub fn written(&self) -> u32 {
        self.state.written
    }

    /// Consumes the next patch chunk, writing the NEW bytes it completes.
    ///
    /// On error the state stays as it was before this chunk.
    pub fn feed<O, N>(
        &mut self,
        chunk: &[u8],
        old: &mut O,
        new: &mut N,
    ) -> Result<Progress, ApplyError<O::Error>>
    where
        O: OldImage + ?Sized,
        N: NewImage<Error = O::Error> + ?Sized,
    {
        let mut run = Run {
            st: self.state,
            source: &self.source,
            capacity: self.capacity,
            old,
            new,
            buf: &mut self.buf,
            out: 0,
            input: chunk,
            pos: 0,
        };
        run.go()?;
        run.flush()?;
        self.state = run.st;
        Ok(self.progress())
    }

    /// [`Applier::feed`] for a caller that keeps only the [`State`] between chunks, as an async
    /// rebuild does across its flash reads: the work buffer is on the stack for this call
    /// alone, not kept beside the state. On error `state` stays as it was.
    pub fn feed_state<O, N>(
        state: &mut State,
        source: Source,
        capacity: u32,
        chunk: &[u8],
        old: &mut O,
        new: &mut N,
    ) -> Result<Progress, ApplyError<O::Error>>
    where
        O: OldImage + ?Sized,
        N: NewImage<Error = O::Error> + ?Sized,
    {
        let mut applier = Applier {
            state: *state,
            source,
            capacity,
            buf: [0; BUF_LEN],
        };
        let progress = applier.feed(chunk, old, new)?;
        *state = applier.state;
        Ok(progress)
    }

    /// Checks that the whole patch was fed and NEW's CRC-32 is the header's; returns NEW's size.
    pub fn finish<E>(&self) -> Result<u32, ApplyError<E>> {
        Self::finish_state(&self.state)
    }

    /// [`Applier::finish`] of a patch fed with [`Applier::feed_state`].
    pub fn finish_state<E>(s: &State) -> Result<u32, ApplyError<E>> {
        if s.phase != Phase::Done {
            return Err(ApplyError::Truncated {
                consumed: s.consumed,
                written: s.written,
                new_size: if s.phase == Phase::Header {
                    0
                } else {
                    s.new_size
                },
            });
        }
        let actual = !s.crc;
        if actual != s.new_crc {
            return Err(ApplyError::Checksum {
                expected: s.new_crc,
                actual,
            });
        }
        Ok(s.new_size)
    }
}

/// One `feed`: the state being advanced, the caller's storage and the chunk.
struct Run<'a, O: ?Sized, N: ?Sized> {
    st: State,
    source: &'a Source,
    capacity: u32,
    old: &'a mut O,
    new: &'a mut N,
    buf: &'a mut [u8; BUF_LEN],
    /// Bytes in `buf` not yet written to NEW (they are counted in `st.written`).
    out: usize,
    input: &'a [u8],
    pos: usize,
}

/// Reads a value or leaves `go` to wait for the next chunk.
macro_rules! need {
    ($self:ident, $read:expr) => {{
        $self.refill();
        let mut read = $read;
        if matches!(read, Read::More) {
            // An Exp-Golomb prefix may have used up the buffer: refill and read on.
            $self.refill();
            read = $read;
        }
        match read {
            Read::Value(v) => v,
            Read::More => return Ok(false),
            Read::Overlong => return Err($self.bad(Malformed::Overlong)),
        }
    }};
}

impl<O, N, E> Run<'_, O, N>
where
    O: OldImage<Error = E> + ?Sized,
    N: NewImage<Error = E> + ?Sized,
{
    fn bad(&self, what: Malformed) -> ApplyError<E> {
        ApplyError::Malformed {
            at: self.st.consumed,
            what,
        }
    }

    fn refill(&mut self) {
        let taken = self.st.bits.refill(self.input, &mut self.pos);
        self.st.consumed = self.st.consumed.saturating_add(taken);
    }

    fn bits(&mut self, count: u8) -> Read<u32> {
        match self.st.bits.take(count) {
            Some(v) => Read::Value(v),
            None => Read::More,
        }
    }

    fn params(&self) -> Result<Params, ApplyError<E>> {
        Params::from_bytes(self.st.params).ok_or(self.bad(Malformed::Inconsistent))
    }

    /// Runs until the chunk is used up, NEW is complete, or an error.
    fn go(&mut self) -> Result<(), ApplyError<E>> {
        loop {
            // Each step either makes progress (consumes bits, writes bytes or changes phase) and
            // returns true, or returns false with the state untouched when it needs more bits.
            let progressed = match self.st.phase {
                Phase::Header => {
                    let Some(&byte) = self.input.get(self.pos) else {
                        return Ok(());
                    };
                    self.pos += 1;
                    self.st.consumed = self.st.consumed.saturating_add(1);
                    self.header_byte(byte)?;
                    true
                }
                Phase::Kind if self.st.written >= self.st.new_size => {
                    self.st.phase = Phase::Done;
                    true
                }
                Phase::Kind => self.kind()?,
                Phase::Copy => self.copy_fields()?,
                Phase::Correct => self.corrections()?,
                Phase::Literal => self.literal()?,
                Phase::Match => self.matched()?,
                Phase::Done => return self.done(),
            };
            if !progressed {
                return Ok(());
            }
        }
    }

    fn header_byte(&mut self, byte: u8) -> Result<(), ApplyError<E>> {
        let i = usize::from(self.st.step);
        let st = &mut self.st;
        match i {
            0..=3 => {
                if MAGIC.get(i) != Some(&byte) {
                    return Err(self.bad(Malformed::Magic));
                }
            }
            off::VERSION => {
                if byte != VERSION {
                    return Err(self.bad(Malformed::Version(byte)));
                }
            }
            _ if i < off::OLD_SHA => {
                st.old_size |= u32::from(byte) << (8 * (i - off::OLD_SIZE));
                if i == off::OLD_SHA - 1 && st.old_size != self.source.len {
                    return Err(ApplyError::WrongSource(SourceMismatch::Size {
                        patch: st.old_size,
                        image: self.source.len,
                    }));
                }
            }
            _ if i < off::NEW_SIZE => {
                let at = i - off::OLD_SHA;
                if self.source.sha256.get(at) != Some(&byte) {
                    return Err(ApplyError::WrongSource(SourceMismatch::Digest {
                        at: at as u8,
                    }));
                }
            }
            _ if i < off::NEW_CRC => {
                st.new_size |= u32::from(byte) << (8 * (i - off::NEW_SIZE));
                if i == off::NEW_CRC - 1 {
                    if st.new_size > MAX_IMAGE {
                        return Err(self.bad(Malformed::ImageSize));
                    }
                    if st.new_size > self.capacity {
                        return Err(ApplyError::TooLarge {
                            size: st.new_size,
                            capacity: self.capacity,
                        });
                    }
                }
            }
            _ if i < off::PARAMS => {
                st.new_crc |= u32::from(byte) << (8 * (i - off::NEW_CRC));
            }
            _ => {
                let Some(p) = st.params.get_mut(i - off::PARAMS) else {
                    return Err(self.bad(Malformed::Inconsistent));
                };
                *p = byte;
                if i == HEADER_LEN - 1 {
                    if Params::from_bytes(st.params).is_none() {
                        return Err(self.bad(Malformed::Params));
                    }
                    // Checked again as a whole, in case a restored state lied about a field.
                    if st.old_size != self.source.len {
                        return Err(ApplyError::WrongSource(SourceMismatch::Size {
                            patch: st.old_size,
                            image: self.source.len,
                        }));
                    }
                    if st.new_size > MAX_IMAGE.min(self.capacity) {
                        return Err(self.bad(Malformed::Inconsistent));
                    }
                    st.phase = Phase::Kind;
                    st.step = 0;
                    return Ok(());
                }
            }
        }
        self.st.step += 1;
        Ok(())
    }

    fn kind(&mut self) -> Result<bool, ApplyError<E>> {
        let p = self.params()?;
        self.refill();
        let Some(first) = self.st.bits.take(1) else {
            return Ok(false);
        };
        let kind = if self.st.step == 1 {
            if first == 0 {
                Kind::Copy
            } else {
                Kind::Match
            }
        } else if first == 0 {
            p.first
        } else {
            let Some(second) = self.st.bits.take(1) else {
                // Put the first bit back: the state must not hold half a kind.
                self.st.bits.acc |= 1u64 << self.st.bits.n;
                self.st.bits.n += 1;
                return Ok(false);
            };
            let (a, b) = Kind::others(p.first);
            if second == 0 {
                a
            } else {
                b
            }
        };
        self.st.step = 0;
        self.st.phase = match kind {
            Kind::Copy => Phase::Copy,
            Kind::Literal => Phase::Literal,
            Kind::Match => Phase::Match,
        };
        Ok(true)
    }

    fn copy_fields(&mut self) -> Result<bool, ApplyError<E>> {
        let p = self.params()?;
        loop {
            match self.st.step {
                0 => {
                    let v = need!(self, self.st.bits.eg(p.k_diag));
                    self.st.a = v;
                    self.st.step = if v == 0 { 2 } else { 1 };
                }
                1 => {
                    let negative = need!(self, self.bits(1)) == 1;
                    let change = i64::from(self.st.a);
                    let diag = i64::from(self.st.diag) + if negative { -change } else { change };
                    if diag.unsigned_abs() > u64::from(MAX_IMAGE) {
                        return Err(self.bad(Malformed::OldRange));
                    }
                    self.st.diag = diag as i32;
                    self.st.step = 2;
                }
                2 => {
                    let len = u64::from(need!(self, self.st.bits.eg(p.k_len))) + 1;
                    let end = u64::from(self.st.written) + len;
                    if end > u64::from(self.st.new_size) {
                        return Err(self.bad(Malformed::NewOverrun));
                    }
                    let old_start = i64::from(self.st.written) + i64::from(self.st.diag);
                    if old_start < 0 || old_start + len as i64 > i64::from(self.source.len) {
                        return Err(self.bad(Malformed::OldRange));
                    }
                    self.st.b = end as u32;
                    self.st.step = 3;
                }
                _ => {
                    let count = need!(self, self.st.bits.eg(p.k_count));
                    let Some(len) = self.st.b.checked_sub(self.st.written) else {
                        return Err(self.bad(Malformed::Inconsistent));
                    };
                    if count > len {
                        return Err(self.bad(Malformed::Corrections));
                    }
                    self.st.a = count;
                    self.st.step = 0;
                    self.st.phase = Phase::Correct;
                    return Ok(true);
                }
            }
        }
    }

    fn corrections(&mut self) -> Result<bool, ApplyError<E>> {
        let p = self.params()?;
        loop {
            let left = self.st.b.checked_sub(self.st.written);
            let Some(left) = left else {
                return Err(self.bad(Malformed::Inconsistent));
            };
            if self.st.a == 0 {
                self.copy_old(left)?;
                self.st.phase = Phase::Kind;
                self.st.step = 0;
                return Ok(true);
            }
            match self.st.step {
                0 => {
                    let gap = need!(self, self.st.bits.eg(p.k_gap));
                    // Room for this correction and every one after it.
                    if u64::from(gap) + u64::from(self.st.a) > u64::from(left) {
                        return Err(self.bad(Malformed::Corrections));
                    }
                    self.copy_old(gap)?;
                    self.st.step = 1;
                }
                1 => {
                    if need!(self, self.bits(1)) == 0 {
                        self.correct(self.st.last_delta)?;
                    } else {
                        self.st.step = 2;
                    }
                }
                _ => {
                    let delta = need!(self, self.bits(8)) as u8;
                    self.st.last_delta = delta;
                    self.correct(delta)?;
                }
            }
        }
    }

    fn correct(&mut self, delta: u8) -> Result<(), ApplyError<E>> {
        self.copy_old(1)?;
        let Some(byte) = self.out.checked_sub(1).and_then(|i| self.buf.get_mut(i)) else {
            return Err(self.bad(Malformed::Inconsistent));
        };
        *byte = byte.wrapping_add(delta);
        self.st.a -= 1;
        self.st.step = 0;
        Ok(())
    }

    fn literal(&mut self) -> Result<bool, ApplyError<E>> {
        if self.st.step == 0 {
            let p = self.params()?;
            let len = u64::from(need!(self, self.st.bits.eg(p.k_lit))) + 1;
            if u64::from(self.st.written) + len > u64::from(self.st.new_size) {
                return Err(self.bad(Malformed::NewOverrun));
            }
            self.st.a = len as u32;
            self.st.step = 1;
        }
        while self.st.a > 0 {
            let byte = need!(self, self.bits(8)) as u8;
            self.emit(byte)?;
            self.st.a -= 1;
        }
        self.st.phase = Phase::Kind;
        self.st.step = 1;
        Ok(true)
    }

    fn matched(&mut self) -> Result<bool, ApplyError<E>> {
        let p = self.params()?;
        if self.st.step == 0 {
            let dist = u64::from(need!(self, self.st.bits.eg(p.k_dist))) + 1;
            if dist > u64::from(self.st.written) {
                return Err(self.bad(Malformed::Distance));
            }
            self.st.a = dist as u32;
            self.st.step = 1;
        }
        let len = u64::from(need!(self, self.st.bits.eg(p.k_match))) + u64::from(MIN_MATCH);
        if u64::from(self.st.written) + len > u64::from(self.st.new_size) {
            return Err(self.bad(Malformed::NewOverrun));
        }
        self.copy_new(self.st.a, len as u32)?;
        self.st.phase = Phase::Kind;
        self.st.step = 0;
        Ok(true)
    }

    fn done(&mut self) -> Result<(), ApplyError<E>> {
        self.refill();
        if self.st.bits.n >= 8 || self.pos < self.input.len() {
            return Err(self.bad(Malformed::Trailing));
        }
        if self.st.bits.acc != 0 {
            return Err(self.bad(Malformed::Padding));
        }
        Ok(())
    }

    /// Makes room for at least one byte in the buffer.
    fn room(&mut self) -> Result<usize, ApplyError<E>> {
        if self.out >= BUF_LEN {
            self.flush()?;
        }
        Ok(BUF_LEN - self.out)
    }

    /// Checks that `n` more bytes fit in NEW.
    fn fits(&self, n: u32) -> Result<(), ApplyError<E>> {
        let end = u64::from(self.st.written) + u64::from(n);
        if end > u64::from(self.st.new_size) || end > u64::from(self.capacity) {
            return Err(self.bad(Malformed::Inconsistent));
        }
        Ok(())
    }

    fn emit(&mut self, byte: u8) -> Result<(), ApplyError<E>> {
        self.fits(1)?;
        self.room()?;
        let Some(slot) = self.buf.get_mut(self.out) else {
            return Err(self.bad(Malformed::Inconsistent));
        };
        *slot = byte;
        self.out += 1;
        self.st.written += 1;
        Ok(())
    }

    /// Copies `n` bytes of OLD, on the current diagonal, to NEW.
    fn copy_old(&mut self, mut n: u32) -> Result<(), ApplyError<E>> {
        self.fits(n)?;
        while n > 0 {
            let m = self.room()?.min(n as usize);
            let at = i64::from(self.st.written) + i64::from(self.st.diag);
            if at < 0 || at + m as i64 > i64::from(self.source.len) {
                return Err(self.bad(Malformed::OldRange));
            }
            let Some(dst) = self.buf.get_mut(self.out..self.out + m) else {
                return Err(self.bad(Malformed::Inconsistent));
            };
            self.old.read(at as u32, dst).map_err(ApplyError::ReadOld)?;
            self.out += m;
            self.st.written += m as u32;
            n -= m as u32;
        }
        Ok(())
    }

    /// Copies `n` bytes of NEW from `dist` back (the source may overlap the destination).
    fn copy_new(&mut self, dist: u32, mut n: u32) -> Result<(), ApplyError<E>> {
        self.fits(n)?;
        if dist == 0 || dist > self.st.written {
            return Err(self.bad(Malformed::Distance));
        }
        let dist_us = dist as usize;
        while n > 0 {
            let room = self.room()?;
            if dist_us <= self.out {
                // The source is in the buffer: copy byte by byte, as it may overlap.
                let m = room.min(n as usize);
                for _ in 0..m {
                    let src = self.buf.get(self.out - dist_us).copied();
                    let (Some(b), Some(dst)) = (src, self.buf.get_mut(self.out)) else {
                        return Err(self.bad(Malformed::Inconsistent));
                    };
                    *dst = b;
                    self.out += 1;
                }
                self.st.written += m as u32;
                n -= m as u32;
            } else {
                // The source starts in NEW's storage: write the buffer out, read it back.
                self.flush()?;
                let m = (n as usize).min(dist_us).min(BUF_LEN);
                let Some(dst) = self.buf.get_mut(..m) else {
                    return Err(self.bad(Malformed::Inconsistent));
                };
                self.new
                    .read_new(self.st.written - dist, dst)
                    .map_err(ApplyError::ReadNew)?;
                self.out = m;
                self.st.written += m as u32;
                n -= m as u32;
            }
        }
        Ok(())
    }

    /// Writes the buffer to NEW.
    fn flush(&mut self) -> Result<(), ApplyError<E>> {
        if self.out == 0 {
            return Ok(());
        }
        let Some(data) = self.buf.get(..self.out) else {
            return Err(self.bad(Malformed::Inconsistent));
        };
        let at = self.st.written - self.out as u32;
        self.new.write(at, data).map_err(ApplyError::Write)?;
        self.st.crc = crc32::update(self.st.crc, data);
        self.out = 0;
        Ok(())
    }
}

/// The error of the in-memory adapters: an access outside the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("access outside the in-memory image")]
pub struct OutOfBounds;

impl OldImage for &[u8] {
    type Error = OutOfBounds;
    fn read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), OutOfBounds> {
        let start = offset as usize;
        let src = self.get(start..start + buf.len()).ok_or(OutOfBounds)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// NEW in a fixed buffer.
impl NewImage for [u8] {
    type Error = OutOfBounds;
    fn write(&mut self, offset: u32, data: &[u8]) -> Result<(), OutOfBounds> {
        let start = offset as usize;
        let dst = self.get_mut(start..start + data.len()).ok_or(OutOfBounds)?;
        dst.copy_from_slice(data);
        Ok(())
    }
    fn read_new(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), OutOfBounds> {
        let start = offset as usize;
        let src = self.get(start..start + buf.len()).ok_or(OutOfBounds)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// NEW in a growing vector: a write may overwrite what is there or extend it, not leave a gap.
#[cfg(feature = "std")]
impl NewImage for Vec<u8> {
    type Error = OutOfBounds;
    fn write(&mut self, offset: u32, data: &[u8]) -> Result<(), OutOfBounds> {
        let start = offset as usize;
        if start > self.len() {
            return Err(OutOfBounds);
        }
        let end = start + data.len();
        if end > self.len() {
            self.resize(end, 0);
        }
        self.as_mut_slice().write(offset, data)
    }
    fn read_new(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), OutOfBounds> {
        self.as_mut_slice().read_new(offset, buf)
    }
}
