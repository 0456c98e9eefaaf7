//! A blocking driver for one wake over any datagram socket and clock.
//!
//! Implement [`DatagramSocket`] for your stack (`embedded-nal`'s `UdpClientStack`, an
//! `embassy-net` socket behind a blocking shim, a modem's AT socket) and [`Clock`] for a
//! hardware timer; `std::net::UdpSocket` and `std::time` implementations come with feature
//! `std`.

use ota_core::device::{Event, SleepReason};
use ota_core::manifest::Verifier;
use ota_core::storage::{CounterStore, UpdateStorage};
use ota_core::time::Instant;
use ota_core::wire::WakeBudget;

use crate::client::CoapClient;

/// A connected datagram socket.
pub trait DatagramSocket {
    /// The socket's error.
    type Error: core::fmt::Debug;
    /// Sends one datagram to the server.
    fn send(&mut self, datagram: &[u8]) -> Result<(), Self::Error>;
    /// Waits up to `timeout_ms` for a datagram; `Ok(None)` if none came.
    fn recv(&mut self, buf: &mut [u8], timeout_ms: u32) -> Result<Option<usize>, Self::Error>;
}

/// Milliseconds since some origin.
pub trait Clock {
    /// Now.
    fn now(&self) -> Instant;
}

/// How a wake ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WakeEnd {
    /// Seconds to sleep.
    pub sleep_secs: u32,
    /// Why the wake ended.
    pub reason: SleepReason,
}

/// Errors of [`run_wake`].
#[derive(Debug, thiserror::Error)]
pub enum DriveError<N: core::fmt::Debug, S: core::fmt::Debug> {
    /// The socket failed.
    #[error("socket: {0:?}")]
    Socket(N),
    /// Storage failed.
    #[error("storage: {0:?}")]
    Storage(S),
}

/// Runs one wake: restore from storage (the download and, with OSCORE, the sequence
/// reservation), check in, download within `budget`, persist, and return when the device wants
/// to sleep. Every event is handed to `on_event` (the sleep event too).
pub fn run_wake<V, const C: usize, N, K, S>(
    client: &mut CoapClient<V, C>,
    socket: &mut N,
    clock: &K,
    storage: &mut S,
    budget: WakeBudget,
    on_event: impl FnMut(&Event),
) -> Result<WakeEnd, DriveError<N::Error, <S as UpdateStorage>::Error>>
where
    V: Verifier,
    N: DatagramSocket,
    K: Clock,
    S: UpdateStorage + CounterStore<Error = <S as UpdateStorage>::Error>,
{
    client
        .device_mut()
        .restore_from(storage)
        .map_err(DriveError::Storage)?;
    if client.is_secure() {
        client.restore_sequence(storage.load_counter().map_err(DriveError::Storage)?);
    }
    client.device_mut().wake(clock.now(), budget);
    drive(client, socket, clock, storage, on_event)
}

/// Drives a device that is already awake until it wants to sleep: sends what it asks to send,
/// carries out its storage operations, feeds it datagrams and timeouts.
pub fn drive<V, const C: usize, N, K, S>(
    client: &mut CoapClient<V, C>,
    socket: &mut N,
    clock: &K,
    storage: &mut S,
    mut on_event: impl FnMut(&Event),
) -> Result<WakeEnd, DriveError<N::Error, <S as UpdateStorage>::Error>>
where
    V: Verifier,
    N: DatagramSocket,
    K: Clock,
    S: UpdateStorage + CounterStore<Error = <S as UpdateStorage>::Error>,
{
    let mut tx = [0u8; 512];
    let mut rx = [0u8; 1280];
    loop {
        loop {
            if let Some(until) = client.sequence_reservation() {
                storage.store_counter(until).map_err(DriveError::Storage)?;
                client.sequence_reserved(until);
            }
            let Some(n) = client.poll_transmit(clock.now(), &mut tx) else {
                break;
            };
            socket
                .send(tx.get(..n).unwrap_or(&[]))
                .map_err(DriveError::Socket)?;
        }
        client
            .device_mut()
            .drive_storage(storage)
            .map_err(DriveError::Storage)?;
        while let Some(ev) = client.device_mut().poll_event() {
            on_event(&ev);
            if let Event::Sleep { secs, reason } = ev {
                // Acknowledge anything still owed before the radio goes off.
                while let Some(n) = client.poll_transmit(clock.now(), &mut tx) {
                    socket
                        .send(tx.get(..n).unwrap_or(&[]))
                        .map_err(DriveError::Socket)?;
                }
                if let Some(next) = client.settle_sequence() {
                    storage.store_counter(next).map_err(DriveError::Storage)?;
                }
                return Ok(WakeEnd {
                    sleep_secs: secs,
                    reason,
                });
            }
        }
        let now = clock.now();
        let wait = client
            .device()
            .poll_timeout()
            .map(|t| t.since(now))
            .unwrap_or(50)
            .min(u64::from(u32::MAX)) as u32;
        match socket.recv(&mut rx, wait).map_err(DriveError::Socket)? {
            Some(n) => {
                let _ = client.handle_datagram(clock.now(), rx.get_mut(..n).unwrap_or(&mut []));
            }
            None => client.device_mut().handle_timeout(clock.now()),
        }
    }
}

#[cfg(feature = "std")]
mod std_impls {
    use super::*;

    impl DatagramSocket for std::net::UdpSocket {
        type Error = std::io::Error;

        fn send(&mut self, datagram: &[u8]) -> Result<(), std::io::Error> {
            std::net::UdpSocket::send(self, datagram).map(|_| ())
        }

        fn recv(
            &mut self,
            buf: &mut [u8],
            timeout_ms: u32,
        ) -> Result<Option<usize>, std::io::Error> {
            let t = std::time::Duration::from_millis(u64::from(timeout_ms.max(1)));
            self.set_read_timeout(Some(t))?;
            match std::net::UdpSocket::recv(self, buf) {
                Ok(n) => Ok(Some(n)),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    Ok(None)
                }
                // A previous datagram was refused (ICMP port unreachable): the server is not
                // up yet; treat it like a loss.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(None),
                Err(e) => Err(e),
            }
        }
    }

    /// Wall-clock time since the clock was made.
    #[derive(Debug, Clone, Copy)]
    pub struct StdClock(std::time::Instant);

    impl Default for StdClock {
        fn default() -> Self {
            Self(std::time::Instant::now())
        }
    }

    impl Clock for StdClock {
        fn now(&self) -> Instant {
            Instant(self.0.elapsed().as_millis() as u64)
        }
    }
}

#[cfg(feature = "std")]
pub use std_impls::StdClock;
