//! Sealing and opening requests and responses, in place (RFC 8613 sections 5 and 8).
//!
//! The buffer holds the inner message: code byte, class E options, and payload marker and
//! payload if any. Sealing encrypts it and appends the 8-byte tag; opening authenticates and
//! decrypts it and drops the tag. The request's kid and partial IV ([`RequestId`]) bind the
//! response to its request: a response that carries no partial IV of its own reuses the
//! request's nonce under the other direction's key.
//!
//! | message | nonce from | AAD from | key |
//! |---|---|---|---|
//! | request | client's sender id, its partial IV | request kid + partial IV | client sender |
//! | response without partial IV | the request's | the request's | server sender |
//! | response with its own partial IV | server's sender id, that partial IV | the request's | server sender |

use ccm::aead::generic_array::GenericArray;
use ccm::aead::AeadInPlace;
use heapless::Vec;

use crate::context::{Aead, SecurityContext};
use crate::cose::{self, MAX_AAD};
use crate::option::{piv_of, seq_of, OscoreOption};
use crate::{Error, MAX_ID, MAX_SEQUENCE};

/// Length of the authentication tag.
pub const TAG_LEN: usize = 8;

/// What identifies a request: its sender's id and partial IV. The response is bound to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId {
    /// The request sender's id.
    pub kid: Vec<u8, MAX_ID>,
    /// The request's partial IV.
    pub piv: Vec<u8, 5>,
}

impl RequestId {
    /// The sequence number of the request.
    pub fn seq(&self) -> u64 {
        seq_of(&self.piv)
    }

    /// The OSCORE option the request carries: its partial IV and kid.
    pub fn option(&self) -> OscoreOption {
        OscoreOption {
            piv: self.piv.clone(),
            kid: Some(self.kid.clone()),
            kid_context: None,
        }
    }
}

fn seal(
    aead: &Aead,
    nonce: [u8; 13],
    req: &RequestId,
    buf: &mut [u8],
    len: usize,
) -> Result<usize, Error> {
    let mut aad = [0u8; MAX_AAD];
    let aad_len = cose::aad(&req.kid, &req.piv, &mut aad)?;
    let end = len.checked_add(TAG_LEN).ok_or(Error::BufferTooSmall)?;
    if end > buf.len() {
        return Err(Error::BufferTooSmall);
    }
    let (plain, rest) = buf.split_at_mut(len);
    let tag = aead
        .encrypt_in_place_detached(
            GenericArray::from_slice(&nonce),
            aad.get(..aad_len).ok_or(Error::BufferTooSmall)?,
            plain,
        )
        .map_err(|_| Error::BufferTooSmall)?;
    rest.get_mut(..TAG_LEN)
        .ok_or(Error::BufferTooSmall)?
        .copy_from_slice(&tag);
    Ok(end)
}

fn open(
    aead: &Aead,
    nonce: [u8; 13],
    req: &RequestId,
    buf: &mut [u8],
    len: usize,
) -> Result<usize, Error> {
    let plain_len = len.checked_sub(TAG_LEN).ok_or(Error::Decrypt)?;
    let mut aad = [0u8; MAX_AAD];
    let aad_len = cose::aad(&req.kid, &req.piv, &mut aad)?;
    let (cipher, tag) = buf
        .get_mut(..len)
        .ok_or(Error::BufferTooSmall)?
        .split_at_mut(plain_len);
    aead.decrypt_in_place_detached(
        GenericArray::from_slice(&nonce),
        aad.get(..aad_len).ok_or(Error::BufferTooSmall)?,
        cipher,
        GenericArray::from_slice(tag),
    )
    .map_err(|_| Error::Decrypt)?;
    Ok(plain_len)
}

impl SecurityContext {
    /// Client: seals the request in `buf[..len]` with sequence number `seq` (never used
    /// before with this context). Returns its [`RequestId`] (put `id.option()` in the outer
    /// message; keep the id to open the response) and the ciphertext length.
    pub fn seal_request(
        &self,
        seq: u64,
        buf: &mut [u8],
        len: usize,
    ) -> Result<(RequestId, usize), Error> {
        if seq > MAX_SEQUENCE {
            return Err(Error::SequenceExhausted);
        }
        let req = RequestId {
            kid: Vec::from_slice(self.sender_id()).map_err(|_| Error::IdTooLong(MAX_ID + 1))?,
            piv: piv_of(seq),
        };
        let nonce = self.nonce(&req.kid, &req.piv)?;
        let n = seal(&self.sender, nonce, &req, buf, len)?;
        Ok((req, n))
    }

    /// Server: opens the request in `buf[..len]` whose OSCORE option decoded to `opt`. The
    /// option's kid must be this context's recipient id (look the context up by it first).
    /// Returns the [`RequestId`] (check its sequence number against the replay window, then
    /// seal the response with it) and the plaintext length.
    pub fn open_request(
        &self,
        opt: &OscoreOption,
        buf: &mut [u8],
        len: usize,
    ) -> Result<(RequestId, usize), Error> {
        let kid = opt.kid.as_ref().ok_or(Error::Missing("kid"))?;
        if opt.piv.is_empty() {
            return Err(Error::Missing("partial IV"));
        }
        if kid.as_slice() != self.recipient_id() {
            return Err(Error::Decrypt);
        }
        let req = RequestId {
            kid: kid.clone(),
            piv: opt.piv.clone(),
        };
        let nonce = self.nonce(&req.kid, &req.piv)?;
        let n = open(&self.recipient, nonce, &req, buf, len)?;
        Ok((req, n))
    }

    /// Server: seals the response in `buf[..len]` to request `req`, reusing its nonce (the
    /// OSCORE option of the response is empty). Only for a request whose partial IV the replay
    /// window accepted: a replayed request must not get a second, different response under
    /// the same nonce.
    pub fn seal_response(
        &self,
        req: &RequestId,
        buf: &mut [u8],
        len: usize,
    ) -> Result<usize, Error> {
        let nonce = self.nonce(&req.kid, &req.piv)?;
        seal(&self.sender, nonce, req, buf, len)
    }

    /// Client: opens the response in `buf[..len]` to request `req`; `opt` is the response's
    /// OSCORE option (empty, or with the server's own partial IV).
    pub fn open_response(
        &self,
        req: &RequestId,
        opt: &OscoreOption,
        buf: &mut [u8],
        len: usize,
    ) -> Result<usize, Error> {
        let nonce = if opt.piv.is_empty() {
            self.nonce(&req.kid, &req.piv)?
        } else {
            self.nonce(self.recipient_id(), &opt.piv)?
        };
        open(&self.recipient, nonce, req, buf, len)
    }
}
