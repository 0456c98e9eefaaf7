//! The radio between the device task and the server task: two channels of datagrams, a
//! one-way delay on each, and every ninth response lost, so the device's CoAP timers (real
//! embassy-time timers here) fire and retransmit. The server task counts what the link carried,
//! lost datagrams included.

use core::cell::Cell;

use critical_section::Mutex;
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::channel::Channel;
use embassy_time::{with_timeout, Duration, Instant, Timer};
use heapless::Vec;
use ota_transport_coap::link::AsyncDatagram;

/// The largest datagram the radio carries.
const MTU: usize = 640;

/// One datagram in flight.
type Datagram = Vec<u8, MTU>;

/// Requests in flight to the server, each with the time it arrives.
static UP: Channel<CriticalSectionRawMutex, (Instant, Datagram), 8> = Channel::new();
/// Responses in flight to the device, each with the time it arrives.
static IN_FLIGHT: Channel<CriticalSectionRawMutex, (Instant, Datagram), 8> = Channel::new();
/// Responses arrived at the device.
static DOWN: Channel<CriticalSectionRawMutex, Datagram, 8> = Channel::new();

/// One-way delay of the simulated cell link.
const ONE_WAY: Duration = Duration::from_millis(100);

/// What the link carried.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinkStats {
    /// Datagrams up (requests).
    pub up: u32,
    /// Datagrams down, lost ones included.
    pub down: u32,
    /// Responses lost.
    pub lost: u32,
    /// Bytes both ways, lost datagrams included.
    pub bytes: u32,
}

/// The link's counters, read by the device task at the end.
pub static STATS: Mutex<Cell<LinkStats>> = Mutex::new(Cell::new(LinkStats {
    up: 0,
    down: 0,
    lost: 0,
    bytes: 0,
}));

fn count(f: impl FnOnce(&mut LinkStats)) {
    critical_section::with(|cs| {
        let cell = STATS.borrow(cs);
        let mut s = cell.get();
        f(&mut s);
        cell.set(s);
    });
}

/// The device's end: a connected datagram socket, as embassy-net's UDP socket would be.
pub struct Radio;

/// The datagram did not fit the radio's buffer.
#[derive(Debug)]
pub struct TooLong;

impl AsyncDatagram for Radio {
    type Error = TooLong;

    // As embassy-net's `UdpSocket::send_to`: wait for room, then copy the datagram in. A
    // future that built the datagram first would hold its 640 bytes while it waits.
    async fn send(&mut self, datagram: &[u8]) -> Result<(), TooLong> {
        if datagram.len() > MTU {
            return Err(TooLong);
        }
        core::future::poll_fn(|cx| UP.poll_ready_to_send(cx)).await;
        let d = Vec::from_slice(datagram).map_err(|_| TooLong)?;
        // The device task is the one sender: the room it waited for is still there.
        UP.try_send((Instant::now() + ONE_WAY, d))
            .map_err(|_| TooLong)
    }

    async fn recv(&mut self, buf: &mut [u8], timeout_ms: u32) -> Result<Option<usize>, TooLong> {
        let wait = Duration::from_millis(u64::from(timeout_ms));
        match with_timeout(wait, DOWN.receive()).await {
            Ok(d) => {
                let dst = buf.get_mut(..d.len()).ok_or(TooLong)?;
                dst.copy_from_slice(&d);
                Ok(Some(d.len()))
            }
            Err(_) => Ok(None),
        }
    }
}

/// The server's end: answers each request once it has crossed the link.
#[embassy_executor::task]
pub async fn server() {
    let mut out = [0u8; 640];
    loop {
        let (arrives, request) = UP.receive().await;
        Timer::at(arrives).await;
        count(|s| {
            s.up += 1;
            s.bytes += request.len() as u32;
        });
        let Some(n) = firmware_cortex_m::server::respond(&request, &mut out) else {
            continue;
        };
        let lost = critical_section::with(|cs| STATS.borrow(cs).get().down % 9 == 8);
        count(|s| {
            s.down += 1;
            s.bytes += n as u32;
            s.lost += u32::from(lost);
        });
        if !lost {
            if let Ok(d) = Vec::from_slice(out.get(..n).unwrap_or(&[])) {
                IN_FLIGHT.send((Instant::now() + ONE_WAY, d)).await;
            }
        }
    }
}

/// The downlink: hands each response to the device once it has crossed the link.
#[embassy_executor::task]
pub async fn downlink() {
    loop {
        let (arrives, response) = IN_FLIGHT.receive().await;
        Timer::at(arrives).await;
        DOWN.send(response).await;
    }
}

/// The radio sleeps: what had not reached the device is gone.
pub fn off() {
    DOWN.clear();
}
