//! The resources and the option numbers this transport uses.
//!
//! | method | path | request payload | response |
//! |---|---|---|---|
//! | `POST` | `/ota/c` | `ota-core` `CheckIn` | 2.04 with the `CheckInReply` |
//! | `GET` | `/ota/i/{id}` | — | 2.05, RFC 7959 Block2 at the requested size (16..1024), ETag = first 4 bytes of the image SHA-256 |
//! | `POST` | `/ota/r` | `ota-core` `Report` | 2.04, empty |
//!
//! `{id}` is the image id in decimal: a byte or two, since every block request repeats it.

use ota_core::wire::ImageId;

/// First path segment of every resource.
pub const ROOT: &[u8] = b"ota";
/// Check-in resource segment.
pub const CHECKIN: &[u8] = b"c";
/// Image resource segment.
pub const IMAGE: &[u8] = b"i";
/// Report resource segment.
pub const REPORT: &[u8] = b"r";

/// Bytes of a block request as [`crate::CoapClient`] sends it for an image id of one digit:
/// header 4, token 2, Uri-Path `ota`/`i`/`N` 8, Block2 3 (`tests/overhead.rs` checks it).
pub const BLOCK_REQUEST_BYTES: u32 = 17;
/// Bytes of a block response beyond its payload: header 4, token 2, ETag 5, Block2 4, payload
/// marker 1 (`tests/overhead.rs` checks it).
pub const BLOCK_RESPONSE_OVERHEAD: u32 = 16;

/// Option numbers (RFC 7252 section 12.2, RFC 7959).
pub mod opt {
    /// If-Match (critical).
    pub const IF_MATCH: u16 = 1;
    /// Uri-Host (critical).
    pub const URI_HOST: u16 = 3;
    /// ETag.
    pub const ETAG: u16 = 4;
    /// If-None-Match (critical).
    pub const IF_NONE_MATCH: u16 = 5;
    /// Uri-Port (critical).
    pub const URI_PORT: u16 = 7;
    /// OSCORE (critical, RFC 8613).
    pub const OSCORE: u16 = 9;
    /// Uri-Path (critical).
    pub const URI_PATH: u16 = 11;
    /// Content-Format.
    pub const CONTENT_FORMAT: u16 = 12;
    /// Uri-Query (critical).
    pub const URI_QUERY: u16 = 15;
    /// Accept (critical).
    pub const ACCEPT: u16 = 17;
    /// Block2 (critical).
    pub const BLOCK2: u16 = 23;
    /// Block1 (critical).
    pub const BLOCK1: u16 = 27;
    /// Size2.
    pub const SIZE2: u16 = 28;
    /// Size1.
    pub const SIZE1: u16 = 60;
    /// In a check-in response that starts or resumes a download: this server drops the second
    /// copy of a request sent twice back
    /// to back ([`ota_core::device::Transmit::twice`]), so the device may send them (empty,
    /// elective, from the experimental range of RFC 7252 section 12.2; inside OSCORE when
    /// protected). Another CoAP server would answer both copies, so a device sends none until
    /// it has seen this.
    pub const DROPS_COPIES: u16 = 65_000;
}

/// Codes, `class << 5 | detail`.
pub mod code {
    /// Empty message.
    pub const EMPTY: u8 = 0;
    /// GET.
    pub const GET: u8 = 1;
    /// POST.
    pub const POST: u8 = 2;
    /// PUT.
    pub const PUT: u8 = 3;
    /// 2.04 Changed.
    pub const CHANGED: u8 = (2 << 5) | 4;
    /// 2.05 Content.
    pub const CONTENT: u8 = (2 << 5) | 5;
    /// 4.00 Bad Request.
    pub const BAD_REQUEST: u8 = 4 << 5;
    /// 4.01 Unauthorized.
    pub const UNAUTHORIZED: u8 = (4 << 5) | 1;
    /// 4.03 Forbidden.
    pub const FORBIDDEN: u8 = (4 << 5) | 3;
    /// 4.02 Bad Option.
    pub const BAD_OPTION: u8 = (4 << 5) | 2;
    /// 4.04 Not Found.
    pub const NOT_FOUND: u8 = (4 << 5) | 4;
    /// 4.05 Method Not Allowed.
    pub const METHOD_NOT_ALLOWED: u8 = (4 << 5) | 5;
    /// 4.08 Request Entity Incomplete.
    pub const INCOMPLETE: u8 = (4 << 5) | 8;
    /// 4.13 Request Entity Too Large.
    pub const TOO_LARGE: u8 = (4 << 5) | 13;
    /// 5.00 Internal Server Error.
    pub const INTERNAL: u8 = 5 << 5;
    /// 5.03 Service Unavailable.
    pub const UNAVAILABLE: u8 = (5 << 5) | 3;
}

/// The image id as a decimal path segment; returns the bytes used in `out`.
pub fn image_segment(id: ImageId, out: &mut [u8; 10]) -> &[u8] {
    let mut v = id.0;
    let mut i = out.len();
    loop {
        i -= 1;
        if let Some(d) = out.get_mut(i) {
            *d = b'0' + (v % 10) as u8;
        }
        v /= 10;
        if v == 0 || i == 0 {
            break;
        }
    }
    out.get(i..).unwrap_or(&[])
}

/// Parses a decimal image id segment (no sign, no leading zeros beyond "0", fits in u32).
pub fn parse_image_segment(seg: &[u8]) -> Option<ImageId> {
    if seg.is_empty() || seg.len() > 10 || (seg.len() > 1 && seg.first() == Some(&b'0')) {
        return None;
    }
    seg.iter()
        .try_fold(0u32, |acc, &c| {
            c.is_ascii_digit()
                .then(|| acc.checked_mul(10)?.checked_add(u32::from(c - b'0')))
                .flatten()
        })
        .map(ImageId)
}
