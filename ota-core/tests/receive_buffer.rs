//! The wake hands the state machine a message from the receive buffer it gave the link
//! (`Session::recv`'s contract), outside its talk loop; a message a link returns from anywhere
//! else is dropped, never read from the wrong bytes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::*;
use ota_core::device::{SleepReason, Transmit};
use ota_core::runtime::block::block_on;
use ota_core::runtime::{
    run_wake, Blocking, Incoming, Link, LinkError, LinkLimits, OpenContext, Opened, Session,
    WakeOptions, WIRE_CHUNK_OVERHEAD,
};
use ota_core::time::Instant;
use ota_core::wire::{self, CheckInReply, Message, WakeBudget};
use ota_core::Device;
use ota_test_support::sim::SimClock;
use ota_test_support::MemStorage;

/// Answers the first check-in with `reply`, copied into the receive buffer or returned from
/// its own bytes; then nothing, advancing the clock to each deadline.
struct OneReply<'c> {
    reply: &'static [u8],
    in_buffer: bool,
    answered: bool,
    clock: &'c SimClock,
}

impl Link for OneReply<'_> {
    type Error = ();
    type Session<'s>
        = &'s mut Self
    where
        Self: 's;

    fn limits(&self) -> LinkLimits {
        LinkLimits {
            max_chunk: 1024,
            pow2_chunks: false,
            overhead: WIRE_CHUNK_OVERHEAD,
            copies: false,
        }
    }

    async fn open(&mut self, _ctx: OpenContext) -> Result<Opened<&mut Self>, LinkError<()>> {
        Ok(Opened::Session(self))
    }
}

impl Session for &mut OneReply<'_> {
    type Error = ();

    async fn send(&mut self, _t: Transmit, _msg: &[u8]) -> Result<(), LinkError<()>> {
        Ok(())
    }

    async fn recv<'b>(
        &mut self,
        buf: &'b mut [u8],
        deadline: Instant,
    ) -> Result<Option<Incoming<'b>>, LinkError<()>> {
        if !self.answered {
            self.answered = true;
            if !self.in_buffer {
                return Ok(Some(Incoming::Message(self.reply)));
            }
            let dst = &mut buf[..self.reply.len()];
            dst.copy_from_slice(self.reply);
            return Ok(Some(Incoming::Message(dst)));
        }
        self.clock.0.set(self.clock.0.get().max(deadline.0));
        Ok(None)
    }

    async fn close(self, _cut_short: bool) {}

    fn take_link_bytes(&mut self) -> (u64, u64) {
        (0, 0)
    }
}

fn wake(in_buffer: bool) -> SleepReason {
    let mut bytes = [0u8; 64];
    let msg = Message::CheckInReply(CheckInReply::UpToDate {
        next_check_in: 3_600,
    });
    let n = wire::encode(&msg, &mut bytes).unwrap();
    let reply: &'static [u8] = Vec::leak(bytes[..n].to_vec());
    let clock = SimClock(Default::default());
    let mut link = OneReply {
        reply,
        in_buffer,
        answered: false,
        clock: &clock,
    };
    let mut storage = MemStorage::new(32 * 1024);
    let mut dev: Device<_> = Device::new(config(32 * 1024, 4), verifier());
    let budget = WakeBudget {
        bytes: None,
        millis: Some(30_000),
    };
    let end = block_on(run_wake(
        &mut dev,
        &mut link,
        &mut Blocking(&mut storage),
        &clock,
        budget,
        &WakeOptions::default(),
        |_| {},
    ))
    .unwrap();
    end.reason
}

#[test]
fn a_reply_in_the_receive_buffer_reaches_the_state_machine() {
    assert_eq!(wake(true), SleepReason::UpToDate);
}

#[test]
fn a_reply_returned_from_elsewhere_is_dropped() {
    // The same bytes, not in the buffer the wake gave the link: never read, so the check-in
    // goes unanswered until the wake gives up on it.
    let reason = wake(false);
    assert_ne!(reason, SleepReason::UpToDate);
    assert!(
        matches!(reason, SleepReason::LinkLost | SleepReason::BudgetExhausted),
        "{reason:?}"
    );
}
