//! Golden vectors: the exact bytes of every message. A change here is a wire-format change and
//! must come with a protocol version decision (see `wire` module docs).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use ota_core::manifest::{Manifest, SignedManifest, StoredManifest, MANIFEST_FORMAT};
use ota_core::resume::{ResumePhase, ResumeState, RESUME_STATE_LEN_32};
use ota_core::wire::*;

fn hex(b: &[u8]) -> String {
    hex::encode(b)
}

fn checkin_idle() -> Message<'static> {
    Message::CheckIn(CheckIn {
        device_id: b"dev-0001",
        vendor: 0x5e,
        class: 7,
        running: RunningFirmware {
            version: Version::new(1, 3, 2),
            digest: DigestPrefix([0xab; 8]),
            sequence: 41,
        },
        last: LastOutcome::None,
        resume: None,
        caps: Capabilities {
            max_chunk: 1024,
            window: 8,
        },
        budget: None,
    })
}

fn checkin_busy() -> Message<'static> {
    Message::CheckIn(CheckIn {
        device_id: b"dev-0001",
        vendor: 0x5e,
        class: 7,
        running: RunningFirmware {
            version: Version::new(1, 3, 2),
            digest: DigestPrefix([0xab; 8]),
            sequence: 41,
        },
        last: LastOutcome::RolledBack {
            sequence: 40,
            reason: ResultCode::HEALTH_CHECK_FAILED,
        },
        resume: Some(ResumeHint {
            manifest: DigestPrefix([0x11; 8]),
            next_offset: 73_728,
        }),
        caps: Capabilities {
            max_chunk: 1024,
            window: 8,
        },
        budget: Some(WakeBudget {
            bytes: Some(20_000),
            millis: Some(5_000),
        }),
    })
}

fn manifest() -> Manifest {
    Manifest {
        format: MANIFEST_FORMAT,
        vendor: 0x5e,
        class: 7,
        sequence: 42,
        version: Version::new(1, 4, 0),
        image_size: 262_144,
        digest: Digest([0x22; 32]),
        chunk_size: 1024,
        min_running: Some(Version::new(1, 0, 0)),
        patch: None,
    }
}

const MANIFEST_BODY: &str =
    "015e072a0104008080102222222222222222222222222222222222222222222222222222222222222222800801010000";

fn vectors(body: &[u8]) -> Vec<(&'static str, Message<'_>, &'static str)> {
    let sig = Signature([0x33; 64]);
    vec![
        ("checkin idle", checkin_idle(), "0100086465762d303030315e07010302abababababababab29000080080800d511b243"),
        ("checkin busy", checkin_busy(), "0100086465762d303030315e07010302abababababababab2902282401111111111111111180c0048008080101a09c010188276c6a6cfc"),
        ("up to date", Message::CheckInReply(CheckInReply::UpToDate { next_check_in: 3600 }), "010100901c9d6fbe26"),
        (
            "update",
            Message::CheckInReply(CheckInReply::Update {
                image: ImageId(3),
                manifest: Some(SignedManifest { body, signature: sig }),
                resume_from: 0,
                urgency: Urgency::Attempt,
                next_check_in: 3600,
            }),
            "010101030130015e072a0104008080102222222222222222222222222222222222222222222222222222222222222222800801010000333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333330000901c16bccc79",
        ),
        (
            "update resumed",
            Message::CheckInReply(CheckInReply::Update {
                image: ImageId(3),
                manifest: None,
                resume_from: 73_728,
                urgency: Urgency::Forced,
                next_check_in: 3600,
            }),
            "010101030080c00401901c84c17ac0",
        ),
        ("defer", Message::CheckInReply(CheckInReply::Defer { retry_after: 900, reason: DeferReason::OutsideWindow }), "010102840700a6b68a44"),
        ("cancel", Message::CheckInReply(CheckInReply::Cancel { next_check_in: 60 }), "0101033c0afd789c"),
        ("chunk request", Message::ChunkRequest(ChunkRequest { image: ImageId(3), offset: 73_728, len: 1024 }), "01020380c0048008415a794d"),
        ("chunk", Message::Chunk(Chunk::new(ImageId(3), 1024, b"\x00\x01\x02\xff")), "010303800804000102ffb4d7f2e6"),
        (
            "report",
            Message::Report(Report { device_id: b"dev-0001", image: ImageId(3), phase: Phase::Staged, result: ResultCode::INITIAL }),
            "0104086465762d30303031030200e93ad7c9",
        ),
    ]
}

#[test]
fn manifest_body_is_stable() {
    let body = postcard::to_stdvec(&manifest()).unwrap();
    assert_eq!(hex(&body), MANIFEST_BODY);
    let (back, _): (Manifest, _) = postcard::take_from_bytes(&body).unwrap();
    assert_eq!(back, manifest());
}

#[test]
fn every_message_matches_its_vector_both_ways() {
    let body = hex::decode(MANIFEST_BODY).unwrap();
    for (name, msg, expected) in vectors(&body) {
        let bytes = encode_vec(&msg);
        assert_eq!(hex(&bytes), expected, "{name}: encoding changed");
        let mut buf = [0u8; 512];
        let n = encode(&msg, &mut buf).unwrap();
        assert_eq!(
            &buf[..n],
            &bytes[..],
            "{name}: slice and vec encoders differ"
        );
        let wire = hex::decode(expected).unwrap();
        assert_eq!(decode(&wire).unwrap(), msg, "{name}: decoding changed");
    }
}

#[test]
fn nothing_for_you_exchange_is_small() {
    let request = encode_vec(&checkin_idle()).len();
    let reply = encode_vec(&Message::CheckInReply(CheckInReply::UpToDate {
        next_check_in: 3600,
    }))
    .len();
    assert_eq!((request, reply), (35, 9));
    assert!(request <= 64 && reply <= 16);
}

#[test]
fn chunk_overhead_at_1k() {
    let payload = [0x5au8; 1024];
    // Offset 255 KiB: the largest offset of a 256 KiB image.
    let msg = Message::Chunk(Chunk::new(ImageId(3), 255 * 1024, &payload));
    assert_eq!(encode_vec(&msg).len() - payload.len(), 12);
    let req = Message::ChunkRequest(ChunkRequest {
        image: ImageId(3),
        offset: 255 * 1024,
        len: 1024,
    });
    assert_eq!(encode_vec(&req).len(), 12);
}

#[test]
fn newer_minor_fields_are_ignored() {
    // A later minor revision may append fields between the body and the CRC.
    let mut bytes = encode_vec(&checkin_idle());
    bytes.truncate(bytes.len() - 4);
    bytes.extend_from_slice(&[0x07, 0x01, 0x02]);
    let crc = ota_core::crc32::checksum(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    assert_eq!(decode(&bytes).unwrap(), checkin_idle());
}

#[test]
fn unknown_version_and_corruption_are_typed_errors() {
    let mut bytes = encode_vec(&checkin_idle());
    bytes[0] = 2;
    assert_eq!(decode(&bytes), Err(DecodeError::UnsupportedVersion(2)));
    let mut bytes = encode_vec(&checkin_idle());
    bytes[9] ^= 0x04;
    assert_eq!(decode(&bytes), Err(DecodeError::BadCrc));
    assert_eq!(decode(&[]), Err(DecodeError::Empty));
    assert_eq!(decode(&[1]), Err(DecodeError::BadCrc));
}

#[test]
fn stored_manifest_and_resume_state_layouts() {
    let body = hex::decode(MANIFEST_BODY).unwrap();
    let signed = SignedManifest {
        body: &body,
        signature: Signature([0x33; 64]),
    };
    let stored = StoredManifest::from_signed(&signed).unwrap();
    let mut out = [0u8; StoredManifest::MAX_BYTES];
    let n = stored.to_bytes(&mut out).unwrap();
    assert_eq!(n, 1 + body.len() + 64);
    assert_eq!(StoredManifest::from_bytes(&out[..n]), Some(stored));

    let state = ResumeState {
        manifest: Digest([0x44; 32]),
        image: ImageId(3),
        next_offset: 73_728,
        ahead: 0b101,
        phase: ResumePhase::Downloading,
    };
    assert_eq!(
        hex(&state.to_bytes()),
        "4444444444444444444444444444444444444444444444444444444444444444030000000020010005000000\
0100000000"
    );
    assert_eq!(ResumeState::from_bytes(&state.to_bytes()), Ok(state));
    // The earlier layout (a 32-bit bitmap, 45 bytes) is the new one's prefix and still reads.
    assert_eq!(
        ResumeState::from_bytes(&state.to_bytes()[..RESUME_STATE_LEN_32]),
        Ok(state)
    );
    // Bits past the first 32 go after the phase byte.
    let wide = ResumeState {
        ahead: (1 << 63) | 1,
        ..state
    };
    assert_eq!(hex(&wide.to_bytes()[40..]), "010000000100000080");
    assert_eq!(ResumeState::from_bytes(&wide.to_bytes()), Ok(wide));
}

#[test]
fn the_longest_check_in_reply_is_max_reply_len() {
    use ota_core::manifest::{SignedManifest, MAX_MANIFEST_BODY};
    let body = [0xffu8; MAX_MANIFEST_BODY];
    let offer = Message::CheckInReply(CheckInReply::Update {
        image: ImageId(u32::MAX),
        manifest: Some(SignedManifest {
            body: &body,
            signature: Signature([0xff; 64]),
        }),
        resume_from: u32::MAX,
        urgency: Urgency::Forced,
        next_check_in: u32::MAX,
    });
    let mut buf = [0u8; 512];
    assert_eq!(encode(&offer, &mut buf).unwrap(), MAX_REPLY_LEN);
}

/// A check-in with every field present and at its longest; nothing a device sends is longer.
#[test]
fn the_longest_device_message_is_max_sent_len() {
    let id = [b'a'; MAX_DEVICE_ID];
    let longest = Message::CheckIn(CheckIn {
        device_id: &id,
        vendor: u32::MAX,
        class: u32::MAX,
        running: RunningFirmware {
            version: Version {
                major: u16::MAX,
                minor: u16::MAX,
                patch: u16::MAX,
            },
            digest: DigestPrefix([0xff; 8]),
            sequence: u32::MAX,
        },
        last: LastOutcome::RolledBack {
            sequence: u32::MAX,
            reason: ResultCode(u8::MAX),
        },
        resume: Some(ResumeHint {
            manifest: DigestPrefix([0xff; 8]),
            next_offset: u32::MAX,
        }),
        caps: Capabilities {
            max_chunk: u16::MAX,
            window: u8::MAX,
        },
        budget: Some(WakeBudget {
            bytes: Some(u32::MAX),
            millis: Some(u32::MAX),
        }),
    });
    let report = Message::Report(Report {
        device_id: &id,
        image: ImageId(u32::MAX),
        phase: Phase::RolledBack,
        result: ResultCode(u8::MAX),
    });
    let request = Message::ChunkRequest(ChunkRequest {
        image: ImageId(u32::MAX),
        offset: u32::MAX,
        len: u16::MAX,
    });
    let mut buf = [0u8; 512];
    assert_eq!(encode(&longest, &mut buf).unwrap(), MAX_SENT_LEN);
    assert!(encode(&report, &mut buf).unwrap() < MAX_SENT_LEN);
    assert!(encode(&request, &mut buf).unwrap() < MAX_SENT_LEN);
    // The device's own encoder agrees: one byte less and the check-in does not fit.
    assert!(encode(&longest, &mut buf[..MAX_SENT_LEN - 1]).is_err());
}
