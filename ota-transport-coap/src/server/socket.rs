//! Serving on UDP: several sockets bound to one address with `SO_REUSEPORT` (the kernel spreads
//! peers over them by their address, so one peer's retransmissions meet the same deduplication
//! shard), each with a large receive buffer so a burst is queued rather than dropped, and every
//! request answered on a task of its own while the application decides.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use ota_core::host::{now_or_never, Application};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;

use super::{decide, Engine, Step};

/// Requests being decided at once per socket; beyond it the socket is not read (the kernel's
/// receive buffer queues what comes meanwhile).
pub const IN_FLIGHT_PER_SOCKET: usize = 4096;

/// Largest datagram read.
const MAX_DATAGRAM: usize = 2048;

/// Binds `count` UDP sockets to `addr` with `SO_REUSEPORT` (on Unix; one socket elsewhere;
/// other processes of the same user may bind the address too, and the kernel then spreads
/// peers over all of them, which is how two instances share one port) and
/// asks for `recv_buffer` bytes of receive buffer on each (the kernel caps it at
/// `net.core.rmem_max`; [`socket2::Socket::recv_buffer_size`] tells what was granted). A port
/// of 0 is chosen once and shared by all. Call inside a tokio runtime.
pub fn bind(addr: SocketAddr, count: usize, recv_buffer: usize) -> std::io::Result<Vec<UdpSocket>> {
    let mut out = Vec::new();
    let mut addr = addr;
    for _ in 0..count.max(1) {
        let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        #[cfg(unix)]
        s.set_reuse_port(true)?;
        // Best effort: a smaller buffer still serves.
        let _ = s.set_recv_buffer_size(recv_buffer);
        let _ = s.set_send_buffer_size(recv_buffer);
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        if let Some(bound) = s.local_addr()?.as_socket() {
            addr = bound;
        }
        out.push(UdpSocket::from_std(s.into())?);
        if !cfg!(unix) {
            break;
        }
    }
    Ok(out)
}

/// The receive buffer the kernel granted `socket`, bytes.
pub fn recv_buffer(socket: &UdpSocket) -> usize {
    socket2::SockRef::from(socket)
        .recv_buffer_size()
        .unwrap_or(0)
}

/// Binds `sockets` sockets to `addr` ([`bind`]) and serves them ([`serve_app_on`]).
pub async fn serve_app<A: Application + 'static>(
    addr: SocketAddr,
    sockets: usize,
    recv_buffer: usize,
    engine: Arc<Engine>,
    app: Arc<A>,
) -> std::io::Result<()> {
    serve_app_on(bind(addr, sockets, recv_buffer)?, engine, app).await
}

/// Serves `engine` on `sockets` with `app` deciding, until a socket fails or the task is
/// dropped. Each datagram is answered on its own task (or at once, if nothing it needs has to
/// wait), at most [`IN_FLIGHT_PER_SOCKET`] per socket at a time.
pub async fn serve_app_on<A: Application + 'static>(
    sockets: Vec<UdpSocket>,
    engine: Arc<Engine>,
    app: Arc<A>,
) -> std::io::Result<()> {
    let start = Instant::now();
    let mut loops = tokio::task::JoinSet::new();
    for socket in sockets {
        loops.spawn(run_socket(
            Arc::new(socket),
            engine.clone(),
            app.clone(),
            start,
        ));
    }
    while let Some(r) = loops.join_next().await {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(std::io::Error::other(e)),
        }
    }
    Ok(())
}

async fn run_socket<A: Application + 'static>(
    socket: Arc<UdpSocket>,
    engine: Arc<Engine>,
    app: Arc<A>,
    start: Instant,
) -> std::io::Result<()> {
    let limit = Arc::new(Semaphore::new(IN_FLIGHT_PER_SOCKET));
    let stats = engine.stats();
    let max_chunk = u16::try_from(engine.config().default_block).unwrap_or(1024);
    loop {
        let permit = limit
            .clone()
            .acquire_owned()
            .await
            .map_err(std::io::Error::other)?;
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            // ICMP errors from earlier sends surface here on some systems; they concern one
            // peer, not the server.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
            Err(e) => return Err(e),
        };
        let arrived = Instant::now();
        buf.truncate(n);
        stats.datagrams_in.fetch_add(1, Ordering::Relaxed);
        stats.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        let now_ms = start.elapsed().as_millis() as u64;
        let (engine2, app2) = (engine.clone(), app.clone());
        let mut work: std::pin::Pin<Box<dyn Future<Output = Option<Vec<u8>>> + Send>> =
            Box::pin(async move {
                match engine2.request(now_ms, peer, &buf).await {
                    Step::Send(b) => Some(b),
                    Step::Drop => None,
                    Step::Decide(p) => {
                        let answer = decide(&*app2, &p, max_chunk).await;
                        engine2.reply(p, answer)
                    }
                }
            });
        // Most requests need nothing that waits (blocks of a cached image, refusals): answer
        // them here; spawn the rest.
        match now_or_never(work.as_mut()) {
            Some(out) => {
                send(&socket, &engine, out, peer, arrived).await;
                drop(permit);
            }
            None => {
                let (socket, engine) = (socket.clone(), engine.clone());
                tokio::spawn(async move {
                    let out = work.await;
                    send(&socket, &engine, out, peer, arrived).await;
                    drop(permit);
                });
            }
        }
    }
}

async fn send(
    socket: &UdpSocket,
    engine: &Engine,
    out: Option<Vec<u8>>,
    peer: SocketAddr,
    arrived: Instant,
) {
    let Some(out) = out else { return };
    let stats = engine.stats();
    if socket.send_to(&out, peer).await.is_ok() {
        stats.datagrams_out.fetch_add(1, Ordering::Relaxed);
        stats
            .bytes_out
            .fetch_add(out.len() as u64, Ordering::Relaxed);
    }
    stats.latency.observe(arrived.elapsed());
}
