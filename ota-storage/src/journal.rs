//! The append-only journal: records in a ring of at least two sectors.
//!
//! A sector in use starts with a header record carrying a sequence number; the sector with the
//! highest valid header is current. Records are appended after it. When the current sector is
//! full, or its tail is damaged, the journal rotates: it erases the next sector, writes a
//! snapshot of the whole state there, and only then writes that sector's header. Until the
//! header lands the previous sector stays current, so a power cut at any write or erase leaves
//! the last committed state readable.
//!
//! On open, a record whose CRC fails ends the scan (a torn write: the last one before a cut),
//! and so does any byte that is not erased past the last record, or a read the flash refuses
//! (ECC flash reports a half-programmed unit as an error); in each case the next commit
//! rotates, so nothing is ever appended onto half-written flash, and no write unit is ever
//! programmed twice between erases: the journal works on write-once (ECC) flash as it is.

use embedded_storage_async::nor_flash::NorFlash;
use ota_core::manifest::StoredManifest;
use ota_core::resume::{ResumePhase, ResumeState};

use crate::record::{padded, Record, RecordError, MAX_RECORD};
use crate::state::UpdateState;

/// Everything the journal knows, as of its newest record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// The download: manifest and resume record (with progress applied).
    pub download: Option<(ResumeState, StoredManifest)>,
    /// The update state.
    pub state: UpdateState,
    /// A transport's counter ([`ota_core::storage::CounterStore`]).
    pub counter: u64,
}

impl Snapshot {
    /// Applies one record.
    pub fn apply(&mut self, rec: &Record) {
        match *rec {
            Record::Header { .. } => {}
            Record::Begin { state, manifest } => {
                self.download = Some((state, manifest));
                self.state = UpdateState::Downloading;
            }
            Record::Progress {
                image,
                next_offset,
                ahead,
            } => {
                if let Some((s, _)) = self.download.as_mut() {
                    s.image = image;
                    s.next_offset = next_offset;
                    s.ahead = ahead;
                }
            }
            Record::State(state) => {
                self.state = state;
                if state == UpdateState::Idle {
                    self.download = None;
                }
            }
            Record::Counter(v) => self.counter = v,
        }
    }

    /// The resume record as the state machine should see it.
    pub fn resume(&self) -> Option<(ResumeState, StoredManifest)> {
        let (mut s, m) = self.download?;
        match self.state {
            UpdateState::Downloading => s.phase = ResumePhase::Downloading,
            UpdateState::Staged => s.phase = ResumePhase::Staged,
            _ => return None,
        }
        Some((s, m))
    }

    /// The record of `kind` that, applied last, leaves this snapshot as it is: what a commit
    /// of such a record wrote, derived again from the snapshot after it (`None` for a header,
    /// or for progress with no download, which changes nothing).
    pub fn last(&self, kind: RecordKind) -> Option<Record> {
        match kind {
            RecordKind::Header => None,
            RecordKind::Begin => self
                .download
                .map(|(state, manifest)| Record::Begin { state, manifest }),
            RecordKind::Progress => self.download.map(|(s, _)| Record::Progress {
                image: s.image,
                next_offset: s.next_offset,
                ahead: s.ahead,
            }),
            RecordKind::State => Some(Record::State(self.state)),
            RecordKind::Counter => Some(Record::Counter(self.counter)),
        }
    }

    /// How many records [`Snapshot::record`] may return (some of them `None`).
    const RECORDS: usize = 4;

    /// Record `i` of those that rebuild this snapshot, if this snapshot has one there. By
    /// index rather than as an iterator, so a rotation holds one record at a time, not all of
    /// them, across its flash writes (an iterator over them took 2 KB of every storage
    /// future).
    fn record(&self, i: usize) -> Option<Record> {
        match i {
            0 | 1 => {
                let (mut state, manifest) = self.download?;
                let (image, next_offset, ahead) = (state.image, state.next_offset, state.ahead);
                state.next_offset = 0;
                state.ahead = 0;
                Some(if i == 0 {
                    Record::Begin { state, manifest }
                } else {
                    Record::Progress {
                        image,
                        next_offset,
                        ahead,
                    }
                })
            }
            2 => Some(Record::State(self.state)),
            3 => (self.counter > 0).then_some(Record::Counter(self.counter)),
            _ => None,
        }
    }
}

/// What a record is, without its contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// [`Record::Header`].
    Header,
    /// [`Record::Begin`].
    Begin,
    /// [`Record::Progress`].
    Progress,
    /// [`Record::State`].
    State,
    /// [`Record::Counter`].
    Counter,
}

impl RecordKind {
    /// `rec`'s kind.
    pub fn of(rec: &Record) -> Self {
        match rec {
            Record::Header { .. } => Self::Header,
            Record::Begin { .. } => Self::Begin,
            Record::Progress { .. } => Self::Progress,
            Record::State(_) => Self::State,
            Record::Counter(_) => Self::Counter,
        }
    }
}

/// Journal errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JournalError<E> {
    /// The flash failed.
    #[error("flash error: {0:?}")]
    Flash(E),
    /// A snapshot does not fit in one sector.
    #[error("journal sector too small for a snapshot")]
    SectorTooSmall,
}

/// The journal's position in its region.
#[derive(Debug, Clone)]
pub struct Journal {
    base: u32,
    sectors: u32,
    sector_size: u32,
    current: u32,
    seq: u32,
    append: u32,
    /// The next commit must rotate (no sector in use, or a damaged tail).
    rotate: bool,
}

fn rec_size<F: NorFlash>(unpadded: usize) -> u32 {
    padded(unpadded, F::WRITE_SIZE) as u32
}

impl Journal {
    /// Reads the journal in `[base, base + sectors * ERASE_SIZE)`.
    pub async fn open<F: NorFlash>(
        flash: &mut F,
        base: u32,
        sectors: u32,
    ) -> Result<(Self, Snapshot), JournalError<F::Error>> {
        let sector_size = F::ERASE_SIZE as u32;
        let mut buf = [0u8; MAX_RECORD];
        // The current sector: the highest valid header.
        let mut best: Option<(u32, u32)> = None;
        for i in 0..sectors {
            let at = base + i * sector_size;
            if let Ok(Record::Header { seq }) =
                read_record(flash, at, at + sector_size, &mut buf).await
            {
                if best.is_none_or(|(_, s)| seq > s) {
                    best = Some((i, seq));
                }
            }
        }
        let mut journal = Journal {
            base,
            sectors,
            sector_size,
            current: 0,
            seq: 0,
            append: 0,
            rotate: true,
        };
        let mut snap = Snapshot::default();
        let Some((current, seq)) = best else {
            return Ok((journal, snap));
        };
        journal.current = current;
        journal.seq = seq;
        let start = base + current * sector_size;
        let end = start + sector_size;
        let mut at = start + rec_size::<F>(14);
        let clean_end = loop {
            if at >= end {
                break true;
            }
            match read_record(flash, at, end, &mut buf).await {
                Ok(rec) => {
                    snap.apply(&rec);
                    let len = Record::encoded_len(&buf).unwrap_or(MAX_RECORD);
                    at += rec_size::<F>(len);
                }
                Err(RecordError::Erased) => break erased(flash, at, end, &mut buf).await,
                Err(_) => break false,
            }
        };
        journal.append = at - start;
        journal.rotate = !clean_end;
        Ok((journal, snap))
    }

    /// Writes `rec`; `after` is the snapshot with `rec` applied, written whole if the journal
    /// has to rotate first.
    pub async fn commit<F: NorFlash>(
        &mut self,
        flash: &mut F,
        rec: &Record,
        after: &Snapshot,
    ) -> Result<(), JournalError<F::Error>> {
        let after = |i: Option<usize>, b: &mut [u8; MAX_RECORD]| match i {
            None => rec.encode(b),
            Some(i) => after.record(i).map_or(0, |r| r.encode(b)),
        };
        self.append(flash, &after).await
    }

    /// [`Journal::commit`] of the record of `kind` that `after` ends with
    /// ([`Snapshot::last`]), for a caller that keeps only the snapshot: records are encoded
    /// again for each piece programmed, so no record and no encode buffer is kept across a
    /// flash write (they took 512 bytes of every storage future).
    pub async fn commit_last<F: NorFlash>(
        &mut self,
        flash: &mut F,
        after: &Snapshot,
        kind: RecordKind,
    ) -> Result<(), JournalError<F::Error>> {
        let after = |i: Option<usize>, b: &mut [u8; MAX_RECORD]| {
            let rec = match i {
                None => after.last(kind),
                Some(i) => after.record(i),
            };
            rec.map_or(0, |r| r.encode(b))
        };
        self.append(flash, &after).await
    }

    /// [`Journal::commit`] of the record `make` builds onto `before`, for a caller that keeps
    /// neither the record nor the snapshot after it: each piece programmed is encoded from
    /// them again on the stack, so the future holds only the two references (a snapshot and a
    /// record took 530 bytes of every storage future). The caller applies the record to its
    /// snapshot once this returns `Ok`.
    pub async fn commit_onto<F: NorFlash>(
        &mut self,
        flash: &mut F,
        before: &Snapshot,
        make: &dyn Fn() -> Record,
    ) -> Result<(), JournalError<F::Error>> {
        let after = |i: Option<usize>, b: &mut [u8; MAX_RECORD]| {
            let rec = make();
            match i {
                None => rec.encode(b),
                Some(i) => {
                    let mut after = *before;
                    after.apply(&rec);
                    after.record(i).map_or(0, |r| r.encode(b))
                }
            }
        };
        self.append(flash, &after).await
    }

    /// Appends the new record, or rotates to a sector holding the snapshot after it whole.
    /// After a failed write the next commit rotates: the torn record is never written over.
    async fn append<F: NorFlash>(
        &mut self,
        flash: &mut F,
        after: After<'_>,
    ) -> Result<(), JournalError<F::Error>> {
        let encode = |b: &mut [u8; MAX_RECORD]| after(None, b);
        let size = rec_size::<F>(encoded_len(&encode));
        if self.rotate || self.append + size > self.sector_size {
            return self.rotate(flash, after).await;
        }
        let at = self.base + self.current * self.sector_size + self.append;
        if let Err(e) = program::<F>(flash, at, &encode).await {
            self.rotate = true;
            return Err(e);
        }
        self.append += size;
        Ok(())
    }

    async fn rotate<F: NorFlash>(
        &mut self,
        flash: &mut F,
        after: After<'_>,
    ) -> Result<(), JournalError<F::Error>> {
        // Never the current sector: its records stay readable until the new header lands.
        let next = (self.current + 1) % self.sectors;
        let start = self.base + next * self.sector_size;
        flash
            .erase(start, start + self.sector_size)
            .await
            .map_err(JournalError::Flash)?;
        let mut at = start + rec_size::<F>(14);
        for i in 0..Snapshot::RECORDS {
            let encode = |b: &mut [u8; MAX_RECORD]| after(Some(i), b);
            let n = encoded_len(&encode);
            if n == 0 {
                continue;
            }
            let len = rec_size::<F>(n);
            if at + len > start + self.sector_size {
                return Err(JournalError::SectorTooSmall);
            }
            program::<F>(flash, at, &encode).await?;
            at += len;
        }
        let seq = self.seq.wrapping_add(1);
        let header = |b: &mut [u8; MAX_RECORD]| Record::Header { seq }.encode(b);
        program::<F>(flash, start, &header).await?;
        self.current = next;
        self.seq = seq;
        self.append = at - start;
        self.rotate = false;
        Ok(())
    }

    /// Bytes appended to the current sector (for wear figures).
    pub fn used(&self) -> u32 {
        self.append
    }
}

/// Encodes a record into the buffer, returning its length (0: no record). A trait object, not
/// a type parameter: one copy of the programming code serves every record, where a parameter
/// made one per caller (2.6 KB of flash).
type Encode<'a> = &'a dyn Fn(&mut [u8; MAX_RECORD]) -> usize;

/// Encodes, from the snapshot after a commit, the commit's record (`None`) or record `i` of
/// those that rebuild it whole in a rotation (`Some(i)`, [`Snapshot::record`]); its length, 0
/// if there is none.
type After<'a> = &'a dyn Fn(Option<usize>, &mut [u8; MAX_RECORD]) -> usize;

/// Bytes `encode` writes (encoded on this call's stack, not kept in a caller's future).
fn encoded_len(encode: Encode<'_>) -> usize {
    let mut buf = [0u8; MAX_RECORD];
    encode(&mut buf)
}

/// Fills `unit` with the bytes of what `encode` writes from `from` on, the erased value past
/// its end (so padding programs nothing); the encoding's padded length.
fn piece(encode: Encode<'_>, from: usize, unit: &mut [u8], write_size: usize) -> usize {
    let mut buf = [0u8; MAX_RECORD];
    let len = encode(&mut buf);
    for (i, b) in unit.iter_mut().enumerate() {
        *b = buf
            .get(from + i)
            .copied()
            .filter(|_| from + i < len)
            .unwrap_or(0xFF);
    }
    padded(len, write_size)
}

/// Programs what `encode` writes at `at`, padded to the write size, 64 bytes at a time, each
/// piece encoded anew.
async fn program<F: NorFlash>(
    flash: &mut F,
    at: u32,
    encode: Encode<'_>,
) -> Result<(), JournalError<F::Error>> {
    let mut unit = [0xFFu8; 64];
    let mut done = 0;
    loop {
        let total = piece(encode, done, &mut unit, F::WRITE_SIZE);
        if done >= total {
            return Ok(());
        }
        let n = unit.len().min(total - done);
        flash
            .write(at + done as u32, unit.get(..n).unwrap_or(&[]))
            .await
            .map_err(JournalError::Flash)?;
        done += n;
    }
}

/// Reads and decodes the record at `at` (not past `end`): first its length, then exactly its
/// bytes, so a torn unit after it (an ECC error on write-once flash) never spoils a good record.
/// A read the flash refuses counts as a damaged record: that is how a torn write reads back.
async fn read_record<F: NorFlash>(
    flash: &mut F,
    at: u32,
    end: u32,
    buf: &mut [u8; MAX_RECORD],
) -> Result<Record, RecordError> {
    let room = end.saturating_sub(at) as usize;
    let head = padded(2, F::READ_SIZE).min(room).min(MAX_RECORD);
    let window = buf.get_mut(..head).ok_or(RecordError::Truncated)?;
    if flash.read(at, window).await.is_err() {
        return Err(RecordError::BadCrc);
    }
    let total = Record::encoded_len(window)?;
    let n = padded(total, F::READ_SIZE).min(room).min(MAX_RECORD);
    let window = buf.get_mut(..n).ok_or(RecordError::Truncated)?;
    if n > head && flash.read(at, window).await.is_err() {
        return Err(RecordError::BadCrc);
    }
    Record::decode(window)
}

/// True if `[at, end)` is entirely erased (and readable).
async fn erased<F: NorFlash>(
    flash: &mut F,
    mut at: u32,
    end: u32,
    buf: &mut [u8; MAX_RECORD],
) -> bool {
    while at < end {
        let n = ((end - at) as usize).min(buf.len());
        let window = buf.get_mut(..n).unwrap_or(&mut []);
        if flash.read(at, window).await.is_err() || window.iter().any(|&b| b != 0xFF) {
            return false;
        }
        at += n as u32;
    }
    true
}
