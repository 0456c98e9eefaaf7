//! The device client's OSCORE state (feature `oscore`): its security context and sender
//! sequence numbers, sealing requests and opening responses. Without the feature it is an
//! empty type, so a plain build carries no OSCORE code.

use core::ops::Range;

use coap_message_implementations::inmemory::{MessageMut, SliceBufferMut, WriteError};

use crate::client::ClientError;
use crate::udp::{Datagram, UdpError};

/// Sequence numbers reserved (and persisted) at a time.
pub const SEQUENCE_RESERVATION: u64 = 64;

#[cfg(feature = "oscore")]
mod imp {
    use coap_message::MinimalWritableMessage as _;
    use ota_oscore::option::piv_of;
    use ota_oscore::{RequestId, SecurityContext, SenderSequence};

    use super::*;
    use crate::resources::{code, opt};
    use crate::secure;
    use crate::udp::{self, MsgType};

    /// A device's OSCORE state.
    pub struct Security {
        ctx: SecurityContext,
        seq: SenderSequence,
    }

    impl Security {
        pub fn new(ctx: SecurityContext) -> Self {
            Self {
                ctx,
                seq: SenderSequence::restore(0),
            }
        }

        pub fn restore(&mut self, persisted: u64) {
            self.seq = SenderSequence::restore(persisted);
        }

        pub fn available(&self) -> u64 {
            self.seq.available()
        }

        /// A reservation to persist, if none is left.
        pub fn reservation(&self) -> Option<u64> {
            if self.seq.available() > 0 {
                return None;
            }
            self.seq.reserve(SEQUENCE_RESERVATION).ok()
        }

        pub fn reserved(&mut self, value: u64) {
            self.seq.reserved(value);
        }

        pub fn settle(&mut self) -> u64 {
            self.seq.settle()
        }

        /// Seals the request `fill` writes and frames it as a confirmable POST with the OSCORE
        /// option; its sequence number and the framed length.
        pub fn seal(
            &mut self,
            buf: &mut [u8],
            (mid, token): (u16, &[u8]),
            fill: impl FnOnce(&mut MessageMut<SliceBufferMut<'_>>) -> Result<(), WriteError>,
        ) -> Option<(u64, Result<usize, UdpError>)> {
            let seq = self.seq.take()?;
            let mut inner = [0u8; secure::MAX_INNER_REQUEST];
            let len = secure::build_inner(&mut inner, fill).ok()?;
            let (id, sealed) = self.ctx.seal_request(seq, &mut inner, len).ok()?;
            let (value, vlen) = secure::option_bytes(&id.option());
            let built = udp::build(buf, MsgType::Con, mid, token, |m| {
                m.set_code(code::POST);
                m.add_option(opt::OSCORE, value.get(..vlen).unwrap_or(&[]))?;
                m.set_payload(inner.get(..sealed).unwrap_or(&[]))
            });
            Some((seq, built))
        }

        /// Opens the protected response `p` (in `datagram`) to the request sealed with `seq`,
        /// in place: the inner code and where the inner options and payload are.
        pub fn open(
            &self,
            seq: u64,
            p: Protected,
            datagram: &mut [u8],
        ) -> Result<(u8, Range<usize>), ClientError> {
            let request = RequestId {
                kid: heapless::Vec::from_slice(self.ctx.sender_id())
                    .map_err(|_| ClientError::Unprotected)?,
                piv: piv_of(seq),
            };
            let region = datagram
                .get_mut(p.payload_at..)
                .ok_or(ClientError::Options)?;
            let n = self
                .ctx
                .open_response(&request, &p.option, region, p.payload_len)?;
            let inner_code = *region.first().ok_or(ClientError::Options)?;
            Ok((inner_code, p.payload_at + 1..p.payload_at + n))
        }
    }

    pub use crate::secure::Protected;

    /// Where a protected response's ciphertext is; `None` for an unprotected one.
    pub fn outer(d: &Datagram<'_>, len: usize) -> Result<Option<Protected>, ClientError> {
        secure::outer(d, len).map_err(|_| ClientError::Options)
    }
}

#[cfg(not(feature = "oscore"))]
mod imp {
    use super::*;

    /// No OSCORE in this build: a type with no values.
    pub enum Security {}

    impl Security {
        pub fn restore(&mut self, _persisted: u64) {
            match *self {}
        }
        pub fn available(&self) -> u64 {
            match *self {}
        }
        pub fn reservation(&self) -> Option<u64> {
            match *self {}
        }
        pub fn reserved(&mut self, _value: u64) {
            match *self {}
        }
        pub fn settle(&mut self) -> u64 {
            match *self {}
        }
        pub fn seal(
            &mut self,
            _buf: &mut [u8],
            _header: (u16, &[u8]),
            _fill: impl FnOnce(&mut MessageMut<SliceBufferMut<'_>>) -> Result<(), WriteError>,
        ) -> Option<(u64, Result<usize, UdpError>)> {
            match *self {}
        }
        pub fn open(
            &self,
            _seq: u64,
            _p: Protected,
            _datagram: &mut [u8],
        ) -> Result<(u8, Range<usize>), ClientError> {
            match *self {}
        }
    }

    /// No OSCORE in this build.
    pub enum Protected {}

    pub fn outer(_d: &Datagram<'_>, _len: usize) -> Result<Option<Protected>, ClientError> {
        Ok(None)
    }
}

pub use imp::{outer, Security};
