//! Property tests: sealing and opening round-trip for any keys, ids, sequence numbers and
//! plaintexts; any change to the ciphertext, the option or the keys is refused; the option
//! codec round-trips and never panics; the replay window matches a model; sequence numbers are
//! never handed out twice across resets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeSet;

use ota_oscore::option::{piv_of, seq_of, OscoreOption, MAX_OPTION};
use ota_oscore::{Error, ReplayWindow, SecurityContext, SenderSequence, MAX_SEQUENCE, TAG_LEN};
use proptest::prelude::*;

fn pair(secret: &[u8], salt: &[u8], dev: &[u8], srv: &[u8]) -> (SecurityContext, SecurityContext) {
    (
        SecurityContext::derive(secret, salt, dev, srv).unwrap(),
        SecurityContext::derive(secret, salt, srv, dev).unwrap(),
    )
}

proptest! {
    #[test]
    fn request_and_response_round_trip(
        secret in prop::collection::vec(any::<u8>(), 16..=32),
        salt in prop::collection::vec(any::<u8>(), 0..=8),
        dev in prop::collection::vec(any::<u8>(), 0..=7),
        srv in prop::collection::vec(any::<u8>(), 0..=7),
        seq in 0..=MAX_SEQUENCE,
        request in prop::collection::vec(any::<u8>(), 1..200),
        response in prop::collection::vec(any::<u8>(), 1..200),
    ) {
        let (device, server) = pair(&secret, &salt, &dev, &srv);
        let mut buf = vec![0u8; 256];
        buf[..request.len()].copy_from_slice(&request);
        let (req, n) = device.seal_request(seq, &mut buf, request.len()).unwrap();
        prop_assert_eq!(n, request.len() + TAG_LEN);
        let mut opt_bytes = [0u8; MAX_OPTION];
        let olen = req.option().encode(&mut opt_bytes);
        let opt = OscoreOption::decode(&opt_bytes[..olen]).unwrap();
        let (seen, m) = server.open_request(&opt, &mut buf, n).unwrap();
        prop_assert_eq!(&buf[..m], &request[..]);
        prop_assert_eq!(seen.seq(), seq);

        buf[..response.len()].copy_from_slice(&response);
        let n = server.seal_response(&seen, &mut buf, response.len()).unwrap();
        let m = device.open_response(&req, &OscoreOption::default(), &mut buf, n).unwrap();
        prop_assert_eq!(&buf[..m], &response[..]);
    }

    /// A flipped bit anywhere in the ciphertext or tag, another sequence number in the option,
    /// or another device's keys: the request does not open.
    #[test]
    fn tampering_is_refused(
        secret in prop::collection::vec(any::<u8>(), 16..=16),
        other in prop::collection::vec(any::<u8>(), 16..=16),
        request in prop::collection::vec(any::<u8>(), 1..64),
        seq in 0..1_000_000u64,
        flip in any::<prop::sample::Index>(),
        bit in 0..8u8,
    ) {
        let (device, server) = pair(&secret, b"", b"\x07", b"");
        let mut buf = vec![0u8; 128];
        buf[..request.len()].copy_from_slice(&request);
        let (req, n) = device.seal_request(seq, &mut buf, request.len()).unwrap();
        let sealed = buf[..n].to_vec();

        let mut flipped = sealed.clone();
        flipped[flip.index(n)] ^= 1 << bit;
        prop_assert_eq!(server.open_request(&req.option(), &mut flipped, n), Err(Error::Decrypt).map(|()| unreachable!()));

        let mut moved = req.option();
        moved.piv = piv_of(seq + 1);
        let mut copy = sealed.clone();
        prop_assert!(server.open_request(&moved, &mut copy, n).is_err());

        if other != secret {
            let (_, stranger) = pair(&other, b"", b"\x07", b"");
            let mut copy = sealed.clone();
            prop_assert!(stranger.open_request(&req.option(), &mut copy, n).is_err());
        }
    }

    #[test]
    fn option_round_trips(
        piv in prop::collection::vec(any::<u8>(), 0..=5),
        kid in prop::option::of(prop::collection::vec(any::<u8>(), 0..=7)),
        ctx in prop::option::of(prop::collection::vec(any::<u8>(), 0..=16)),
    ) {
        let opt = OscoreOption {
            piv: heapless::Vec::from_slice(&piv).unwrap(),
            kid: kid.map(|k| heapless::Vec::from_slice(&k).unwrap()),
            kid_context: ctx.map(|c| heapless::Vec::from_slice(&c).unwrap()),
        };
        let mut out = [0u8; MAX_OPTION];
        let n = opt.encode(&mut out);
        prop_assert_eq!(OscoreOption::decode(&out[..n]).unwrap(), opt);
    }

    #[test]
    fn option_decoding_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
        let _ = OscoreOption::decode(&bytes);
    }

    #[test]
    fn partial_iv_round_trips(seq in 0..=MAX_SEQUENCE) {
        let piv = piv_of(seq);
        prop_assert!(!piv.is_empty() && piv.len() <= 5);
        prop_assert!(piv.len() == 1 || piv[0] != 0, "minimal encoding");
        prop_assert_eq!(seq_of(&piv), seq);
    }

    /// The window accepts exactly what a model accepts: never a number seen before, and
    /// nothing more than 32 below the highest.
    #[test]
    fn replay_window_matches_a_model(seqs in prop::collection::vec(0..200u64, 0..300)) {
        let mut w = ReplayWindow::new();
        let mut seen = BTreeSet::new();
        for s in seqs {
            let highest = seen.iter().next_back().copied();
            let model = !seen.contains(&s) && highest.is_none_or(|h| s + 32 >= h);
            prop_assert_eq!(w.accept(s), model, "seq {} highest {:?}", s, highest);
            if model {
                seen.insert(s);
            }
        }
    }

    /// Resets at random points, reservations of random sizes: no number is handed out twice.
    #[test]
    fn sequence_numbers_never_repeat_across_resets(
        steps in prop::collection::vec((0..3u8, 1..20u64), 1..200),
    ) {
        let mut persisted = 0u64;
        let mut seq = SenderSequence::restore(persisted);
        let mut used = BTreeSet::new();
        for (action, n) in steps {
            match action {
                0 => {
                    // Reset: only flash survives.
                    seq = SenderSequence::restore(persisted);
                }
                1 => {
                    let until = seq.reserve(n).unwrap();
                    persisted = until;
                    seq.reserved(until);
                }
                _ => {
                    for _ in 0..n {
                        match seq.take() {
                            Some(s) => prop_assert!(used.insert(s), "{} reused", s),
                            None => break,
                        }
                    }
                    if n % 2 == 0 {
                        persisted = seq.settle();
                    }
                }
            }
        }
    }
}
