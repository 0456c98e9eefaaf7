//! The device's wake loop: one `async fn` that drives the sans-IO [`Device`](crate::Device)
//! over a [`Link`] and a [`Storage`], the way `quinn` drives `quinn-proto`.
//!
//! | piece | what it is | implemented by |
//! |---|---|---|
//! | [`Link`] / [`Session`] | a transport: open a session for the wake, send what the state machine produced, receive until a deadline, close | `ota-transport-coap` (`CoapLink`), `ota-transport-mqtt` (`MqttLink`), `ota-test-support` (`SimLink`, a simulated link) |
//! | [`Storage`] | the state machine's storage operations, async | `ota-storage` (async flash), [`Blocking`] around any [`crate::UpdateStorage`] |
//! | [`Clock`] | now, and waiting until a deadline | `EmbassyClock` (feature `embassy-time`), tokio, the simulator, [`block::BusyClock`] |
//! | [`run_wake`] | one wake: restore, open, check in, download within the budget, persist, close | |
//! | [`block`] | [`block::block_on`] and adapters, for blocking code | |
//!
//! One wake, as [`run_wake`] runs it:
//!
//! ```text
//! storage.load() -> restore the download, the capacity, the outcome to report
//! link.open()    -> Settled (the link knows "up to date": sleep, no check-in) | Session
//! loop {
//!   persist the link's counter if it asks (OSCORE sequence numbers), then send what the
//!   state machine produced; carry out its storage operations one at a time; hand over events;
//!   receive until its next deadline; count every byte the link carried
//! }
//! session.close(cut_short); settle the link's counter
//! ```
//!
//! A session the link loses (a broker connection) is opened again after
//! [`WakeOptions::reconnect_delay_ms`] while the state machine's timers keep running, so its
//! retry limits end a wake whose server stays away.

pub mod block;
mod clock;
#[cfg(feature = "embassy-time")]
mod embassy_time;
mod link;
mod storage;
mod wake;

pub use clock::{with_deadline, yield_now, Clock, TimedOut};
#[cfg(feature = "embassy-time")]
pub use embassy_time::EmbassyClock;
pub use link::{
    Incoming, Link, LinkError, LinkLimits, OpenContext, Opened, Session, MIN_POW2_CHUNK,
    WIRE_CHUNK_OVERHEAD,
};
pub use storage::{Blocking, Storage};
pub use wake::{run_wake, run_wake_in, WakeEnd, WakeError, WakeOptions, RX};
