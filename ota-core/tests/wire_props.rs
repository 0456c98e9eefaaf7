//! Property tests: every message round-trips, arbitrary bytes never panic a decoder, frames
//! resynchronise after garbage, and the resume bitmap agrees with a simple model.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeSet;

use ota_core::framing::{encode_frame_vec, FrameDecoder};
use ota_core::manifest::{SignedManifest, StoredManifest};
use ota_core::resume::{ResumePhase, ResumeState, MAX_AHEAD};
use ota_core::wire::*;
use proptest::prelude::*;

fn version() -> impl Strategy<Value = Version> {
    (any::<u16>(), any::<u16>(), any::<u16>()).prop_map(|(a, b, c)| Version::new(a, b, c))
}

fn result_code() -> impl Strategy<Value = ResultCode> {
    any::<u8>().prop_map(ResultCode)
}

fn last_outcome() -> impl Strategy<Value = LastOutcome> {
    prop_oneof![
        Just(LastOutcome::None),
        any::<u32>().prop_map(|sequence| LastOutcome::Confirmed { sequence }),
        (any::<u32>(), result_code())
            .prop_map(|(sequence, reason)| LastOutcome::RolledBack { sequence, reason }),
        (any::<u32>(), result_code())
            .prop_map(|(sequence, reason)| LastOutcome::Failed { sequence, reason }),
    ]
}

#[derive(Debug, Clone)]
struct CheckInParts {
    id: Vec<u8>,
    vendor: u32,
    class: u32,
    running: RunningFirmware,
    last: LastOutcome,
    resume: Option<ResumeHint>,
    caps: Capabilities,
    budget: Option<WakeBudget>,
}

/// Device ids that follow the rule of `check_device_id`.
fn device_id() -> impl Strategy<Value = Vec<u8>> {
    "[A-Za-z0-9._:-]{1,32}".prop_map(String::into_bytes)
}

fn checkin_parts() -> impl Strategy<Value = CheckInParts> {
    (
        device_id(),
        any::<u32>(),
        any::<u32>(),
        (version(), any::<[u8; 8]>(), any::<u32>()),
        last_outcome(),
        prop::option::of((any::<[u8; 8]>(), any::<u32>())),
        (any::<u16>(), any::<u8>()),
        prop::option::of((
            prop::option::of(any::<u32>()),
            prop::option::of(any::<u32>()),
        )),
    )
        .prop_map(
            |(id, vendor, class, (v, d, s), last, resume, (mc, w), budget)| CheckInParts {
                id,
                vendor,
                class,
                running: RunningFirmware {
                    version: v,
                    digest: DigestPrefix(d),
                    sequence: s,
                },
                last,
                resume: resume.map(|(m, o)| ResumeHint {
                    manifest: DigestPrefix(m),
                    next_offset: o,
                }),
                caps: Capabilities {
                    max_chunk: mc,
                    window: w,
                },
                budget: budget.map(|(bytes, millis)| WakeBudget { bytes, millis }),
            },
        )
}

fn roundtrip(msg: &Message<'_>) {
    let bytes = encode_vec(msg);
    assert_eq!(&decode(&bytes).unwrap(), msg);
    assert_eq!(peek_kind(&bytes), Some(msg.kind()));
    assert_eq!(
        peek_offer(&bytes),
        matches!(msg, Message::CheckInReply(CheckInReply::Update { .. }))
    );
    let mut buf = vec![0u8; bytes.len()];
    assert_eq!(encode(msg, &mut buf).unwrap(), bytes.len());
    assert_eq!(buf, bytes);
    // One byte short never fits.
    let mut short = vec![0u8; bytes.len() - 1];
    assert!(encode(msg, &mut short).is_err());
    inbound_agrees(&bytes);
    // The device's encoder writes the same bytes for what a device sends.
    let outbound = match msg.clone() {
        Message::CheckIn(m) => Some(Outbound::CheckIn(m)),
        Message::ChunkRequest(m) => Some(Outbound::ChunkRequest(m)),
        Message::Report(m) => Some(Outbound::Report(m)),
        Message::CheckInReply(_) | Message::Chunk(_) => None,
    };
    if let Some(o) = outbound {
        let mut out = vec![0u8; bytes.len()];
        assert_eq!(encode_outbound(&o, &mut out).unwrap(), bytes.len());
        assert_eq!(out, bytes);
        assert!(encode_outbound(&o, &mut short).is_err());
    }
}

/// The device's decoder accepts exactly what `decode` decodes to a reply or a chunk, as the
/// same value, and refuses every kind a server receives as not inbound.
fn inbound_agrees(bytes: &[u8]) {
    match (decode(bytes), decode_inbound(bytes)) {
        (Ok(Message::CheckInReply(a)), Ok(Inbound::CheckInReply(b))) => assert_eq!(a, b),
        (Ok(Message::Chunk(a)), Ok(Inbound::Chunk(b))) => assert_eq!(a, b),
        (Ok(m), Err(DecodeError::NotInbound(k))) => {
            assert!(!matches!(m, Message::CheckInReply(_) | Message::Chunk(_)));
            assert_eq!(k, bytes[1]);
        }
        (Err(_), Err(_)) => {}
        (full, device) => panic!("decode {full:?} but decode_inbound {device:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn checkin_roundtrips(p in checkin_parts()) {
        roundtrip(&Message::CheckIn(CheckIn {
            device_id: &p.id, vendor: p.vendor, class: p.class, running: p.running,
            last: p.last, resume: p.resume, caps: p.caps, budget: p.budget,
        }));
    }

    #[test]
    fn replies_roundtrip(
        kind in 0u8..5,
        image in any::<u32>(),
        body in prop::collection::vec(any::<u8>(), 0..=128),
        sig in prop::collection::vec(any::<u8>(), 64),
        a in any::<u32>(),
        b in any::<u32>(),
        forced in any::<bool>(),
        reason in 0u8..3,
    ) {
        let signature = Signature(sig.try_into().unwrap());
        let urgency = if forced { Urgency::Forced } else { Urgency::Attempt };
        let reply = match kind {
            0 => CheckInReply::UpToDate { next_check_in: a },
            1 => CheckInReply::Update { image: ImageId(image), manifest: Some(SignedManifest { body: &body, signature }), resume_from: a, urgency, next_check_in: b },
            2 => CheckInReply::Update { image: ImageId(image), manifest: None, resume_from: a, urgency, next_check_in: b },
            3 => CheckInReply::Defer { retry_after: a, reason: [DeferReason::OutsideWindow, DeferReason::RolloutNotReached, DeferReason::ServerBusy][reason as usize] },
            _ => CheckInReply::Cancel { next_check_in: a },
        };
        roundtrip(&Message::CheckInReply(reply));
    }

    #[test]
    fn chunk_messages_roundtrip(
        image in any::<u32>(),
        offset in any::<u32>(),
        len in any::<u16>(),
        payload in prop::collection::vec(any::<u8>(), 0..=MAX_CHUNK_PAYLOAD),
    ) {
        roundtrip(&Message::ChunkRequest(ChunkRequest { image: ImageId(image), offset, len }));
        let chunk = Chunk::new(ImageId(image), offset, &payload);
        prop_assert!(chunk.crc_ok());
        roundtrip(&Message::Chunk(chunk));
    }

    #[test]
    fn report_roundtrips(
        id in device_id(),
        image in any::<u32>(),
        phase in 0usize..7,
        result in result_code(),
    ) {
        let phases = [Phase::Rejected, Phase::Downloading, Phase::Staged, Phase::TrialBoot, Phase::Confirmed, Phase::RolledBack, Phase::Failed];
        roundtrip(&Message::Report(Report { device_id: &id, image: ImageId(image), phase: phases[phase], result }));
    }

    /// Any id bytes: a message carrying them decodes exactly when the id follows the rule, and
    /// is refused with the rule's own error otherwise (never cut short, never accepted).
    #[test]
    fn device_ids_are_checked_on_decode(
        id in prop::collection::vec(any::<u8>(), 0..=MAX_DEVICE_ID + 8),
        image in any::<u32>(),
    ) {
        let msg = Message::Report(Report {
            device_id: &id,
            image: ImageId(image),
            phase: Phase::Staged,
            result: ResultCode::INITIAL,
        });
        match (check_device_id(&id), decode(&encode_vec(&msg))) {
            (Ok(_), Ok(back)) => prop_assert_eq!(back, msg),
            (Err(e), Err(DecodeError::DeviceId(d))) => prop_assert_eq!(e, d),
            (rule, decoded) => prop_assert!(false, "rule {:?} but decode {:?}", rule, decoded),
        }
    }

    /// Arbitrary bytes decode to an error or a value, never a panic.
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = decode(&bytes);
        let mut with_version = bytes.clone();
        with_version.insert(0, PROTOCOL_VERSION);
        let _ = decode(&with_version);
        inbound_agrees(&bytes);
        inbound_agrees(&with_version);
        let _ = ResumeState::from_bytes(&bytes);
        let _ = StoredManifest::from_bytes(&bytes);
    }

    /// Any single corrupted byte of a CRC-protected message is caught: by the envelope CRC, or,
    /// when the corruption turns the kind byte into "chunk" (which carries its own CRC instead
    /// of the trailer), by the chunk's CRC.
    #[test]
    fn corrupted_messages_are_refused(p in checkin_parts(), at in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let msg = Message::CheckIn(CheckIn {
            device_id: &p.id, vendor: p.vendor, class: p.class, running: p.running,
            last: p.last, resume: p.resume, caps: p.caps, budget: p.budget,
        });
        let mut bytes = encode_vec(&msg);
        let i = at.index(bytes.len());
        bytes[i] ^= flip;
        match decode(&bytes) {
            Err(_) => {}
            Ok(Message::Chunk(c)) => prop_assert!(!c.crc_ok(), "a corrupted message passed as a valid chunk"),
            // Byte 0 is the version; any other version is refused, so nothing else decodes.
            Ok(other) => prop_assert!(false, "corruption at {} decoded as {:?}", i, other),
        }
    }

    /// A corrupted chunk either fails to decode or fails its CRC.
    #[test]
    fn corrupted_chunks_fail_crc(
        offset in any::<u32>(),
        payload in prop::collection::vec(any::<u8>(), 1..1500),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let mut bytes = encode_vec(&Message::Chunk(Chunk::new(ImageId(3), offset, &payload)));
        let i = 2 + at.index(bytes.len() - 2);
        bytes[i] ^= flip;
        if let Ok(Message::Chunk(c)) = decode(&bytes) {
            prop_assert!(!c.crc_ok() || (c.payload == &payload[..] && c.offset == offset));
        }
    }

    #[test]
    fn frames_roundtrip_and_resynchronise(
        payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..300), 1..8),
        garbage in prop::collection::vec(any::<u8>(), 0..64),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut stream = Vec::new();
        // A frame cut short, then line noise, then the real frames.
        let first = encode_frame_vec(&payloads[0]);
        stream.extend_from_slice(&first[..cut.index(first.len())]);
        stream.extend_from_slice(&garbage);
        stream.push(0);
        for p in &payloads {
            stream.extend_from_slice(&encode_frame_vec(p));
        }
        let mut dec = FrameDecoder::<512>::new();
        let mut got = Vec::new();
        for &b in &stream {
            if let Some(Ok(p)) = dec.push(b) {
                got.push(p.to_vec());
            }
        }
        // Every real frame comes out, in order; at most the noise decodes as one spurious frame
        // (which, with a CRC-32, would need a 1 in 4 billion accident).
        prop_assert!(got.ends_with(&payloads), "lost frames");
        prop_assert!(got.len() <= payloads.len() + 1);
    }

    #[test]
    fn oversize_frames_are_dropped_not_truncated(len in 600usize..2000, next in prop::collection::vec(any::<u8>(), 1..100)) {
        let mut dec = FrameDecoder::<512>::new();
        let big = encode_frame_vec(&vec![7u8; len]);
        let mut results = Vec::new();
        for &b in big.iter().chain(encode_frame_vec(&next).iter()) {
            if let Some(r) = dec.push(b) {
                results.push(r.map(|p| p.to_vec()));
            }
        }
        prop_assert_eq!(results, vec![Err(ota_core::framing::FrameError::Overflow), Ok(next)]);
    }

    /// `mark` agrees with a set of staged chunk indices, `staged_end` with its furthest chunk,
    /// and the encoding round-trips.
    #[test]
    fn resume_bitmap_matches_model(
        chunk in 1u32..2048,
        chunks in 1u32..300,
        short in 0u32..2048,
        order in prop::collection::vec(any::<prop::sample::Index>(), 0..400),
    ) {
        let size = (chunks - 1) * chunk + (short % chunk) + 1;
        let n = size.div_ceil(chunk);
        let mut state = ResumeState::new(Digest([1; 32]), ImageId(9));
        let mut model = BTreeSet::new();
        for ix in order {
            let i = ix.index(n as usize) as u32;
            let accepted = state.mark(i * chunk, chunk, size);
            // The model accepts what lies within MAX_AHEAD chunks of the first gap.
            let first_gap = (0..n).find(|c| !model.contains(c)).unwrap_or(n);
            let expect = i < first_gap || i <= first_gap + MAX_AHEAD;
            prop_assert_eq!(accepted, expect, "chunk {} gap {}", i, first_gap);
            if accepted {
                model.insert(i);
            }
            let first_gap = (0..n).find(|c| !model.contains(c)).unwrap_or(n);
            prop_assert_eq!(state.next_offset, (first_gap * chunk).min(size));
            for c in 0..n {
                prop_assert_eq!(state.has(c * chunk, chunk), model.contains(&c) && (c < first_gap || c <= first_gap + MAX_AHEAD));
            }
            // Nothing at or past `staged_end` is staged, and the chunk ending there is.
            let end = model.iter().next_back().map_or(0, |&c| (c + 1) * chunk).max(first_gap * chunk);
            prop_assert_eq!(state.staged_end(chunk).min(size), end.min(size));
            prop_assert_eq!(ResumeState::from_bytes(&state.to_bytes()), Ok(state));
        }
        prop_assert_eq!(state.is_complete(size), model.len() as u32 == n);
        let _ = ResumePhase::Staged;
    }
}
