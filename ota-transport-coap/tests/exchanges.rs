//! How many exchanges a `CoapFraming` remembers: a small firmware sizes it from its window, and
//! a response to an exchange it had to forget is dropped as unmatched, never misread.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, ResponseType};
use ota_core::device::Sent;
use ota_core::wire::ImageId;
use ota_transport_coap::framing::{ClientError, CoapFraming, Parsed};

const CHUNK: u16 = 64;

/// Frames a request for block `n` of image 7.
fn request<const X: usize>(f: &mut CoapFraming<X>, n: u32) -> Packet {
    let what = Sent::ChunkRequest {
        image: ImageId(7),
        offset: n * u32::from(CHUNK),
        len: CHUNK,
        chunk_size: CHUNK,
    };
    let mut buf = [0u8; 128];
    let len = f
        .frame(what, &[], &mut buf)
        .expect("a block request frames");
    Packet::from_bytes(&buf[..len]).expect("our request parses")
}

/// The server's piggybacked answer to `req`: block `n`, filled with `n`.
fn answer(req: &Packet, n: u32) -> Vec<u8> {
    let mut p = Packet::new();
    p.header.set_type(MessageType::Acknowledgement);
    p.header.message_id = req.header.message_id;
    p.header.code = MessageClass::Response(ResponseType::Content);
    p.set_token(req.get_token().to_vec());
    // Block2: number n, more follow, size 64 (SZX 2).
    let value = (n << 4) | (1 << 3) | 2;
    let bytes = value.to_be_bytes();
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(3);
    p.add_option(CoapOption::Block2, bytes[first..].to_vec());
    p.payload = vec![n as u8; usize::from(CHUNK)];
    p.to_bytes().expect("the answer encodes")
}

#[test]
fn a_framing_sized_for_two_exchanges_forgets_the_oldest() {
    let mut f: CoapFraming<2> = CoapFraming::with_exchanges(1);
    let reqs: Vec<Packet> = (0..3).map(|n| request(&mut f, n)).collect();
    // Block 0's exchange made room for block 2's: its answer matches nothing.
    let mut late = answer(&reqs[0], 0);
    assert_eq!(f.parse(&mut late).err(), Some(ClientError::Unmatched));
    // Blocks 1 and 2 are still remembered, and each answer is read as its own block.
    for n in [2u32, 1] {
        let mut d = answer(&reqs[n as usize], n);
        match f.parse(&mut d) {
            Ok(Parsed::Chunk(c)) => {
                assert_eq!(c.offset, n * u32::from(CHUNK));
                assert!(c.payload.iter().all(|&b| b == n as u8));
            }
            other => panic!("block {n}: {other:?}"),
        }
    }
}

#[test]
fn the_default_framing_remembers_a_whole_window_of_32() {
    let mut f = CoapFraming::new(1);
    let reqs: Vec<Packet> = (0..34).map(|n| request(&mut f, n)).collect();
    // The oldest of 34 outstanding blocks is still matched.
    let mut d = answer(&reqs[0], 0);
    assert!(matches!(f.parse(&mut d), Ok(Parsed::Chunk(_))));
}

/// The request went out twice (a copy, or a resend of a send thought lost) and both sends are
/// answered: the second answer still reaches the state machine as its block, which frees the
/// window slot that send held (dropped as unmatched, the slot stayed taken until its timer).
#[test]
fn a_second_answer_to_one_request_is_still_its_block() {
    let mut f = CoapFraming::new(1);
    let req = request(&mut f, 3);
    for _ in 0..2 {
        let mut d = answer(&req, 3);
        match f.parse(&mut d) {
            Ok(Parsed::Chunk(c)) => assert_eq!(c.offset, 3 * u32::from(CHUNK)),
            other => panic!("{other:?}"),
        }
    }
}

/// An answered exchange makes room before one still in flight.
#[test]
fn an_answered_exchange_makes_room_first() {
    let mut f: CoapFraming<2> = CoapFraming::with_exchanges(1);
    let first = request(&mut f, 0);
    let second = request(&mut f, 1);
    let mut d = answer(&second, 1);
    assert!(matches!(f.parse(&mut d), Ok(Parsed::Chunk(_))));
    // Block 2 needs room: block 1's answered exchange gives it, block 0 is still matched.
    let _third = request(&mut f, 2);
    let mut d = answer(&first, 0);
    assert!(matches!(f.parse(&mut d), Ok(Parsed::Chunk(_))));
}
