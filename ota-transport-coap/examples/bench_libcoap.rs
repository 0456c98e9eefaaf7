//! Serves the same 1 MiB image to libcoap's `coap-client-notls` from our server and from
//! libcoap's own `coap-server-notls`, interleaved run by run, and prints the median times and the median of the per-pair ratios.
//!
//! `cargo run --release -p ota-transport-coap --example bench_libcoap -- [--runs N]`
//! (needs Debian's `libcoap3-bin`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ota_core::wire::ImageId;
use ota_test_support::fixture::{self, Release};
use ota_transport_coap::server::{serve, Responder, Security, ServerConfig};

const SIZE: usize = 1024 * 1024;

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn client(args: &[&str]) {
    let st = Command::new("coap-client-notls")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("coap-client-notls from Debian's libcoap3-bin");
    assert!(st.success(), "coap-client-notls {args:?} failed");
}

/// One full download from `url`, checked byte for byte; its wall time.
fn download(url: &str, expect: &[u8], out: &std::path::Path) -> Duration {
    let _ = std::fs::remove_file(out);
    let t = Instant::now();
    client(&[
        "-m",
        "get",
        "-b",
        "1024",
        "-B",
        "60",
        "-o",
        out.to_str().unwrap(),
        url,
    ]);
    let d = t.elapsed();
    assert!(std::fs::read(out).unwrap() == expect, "{url}: wrong bytes");
    d
}

fn median<T: PartialOrd + Copy>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let runs: usize = std::env::args()
        .skip_while(|a| a != "--runs")
        .nth(1)
        .map(|n| n.parse().expect("--runs N"))
        .unwrap_or(5);
    let img = fixture::bytes(SIZE, 42);
    let dir = std::env::temp_dir().join(format!("ota-coap-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("image");
    let out = dir.join("out");
    std::fs::write(&file, &img).unwrap();

    // Ours, in this process.
    let release = Release {
        image: ImageId(7),
        next_check_in: 60,
        ..Release::of(&img, 1024)
    };
    let handler = Arc::new(release.handler(&img));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ours = free_port();
    let socket = rt
        .block_on(tokio::net::UdpSocket::bind(("127.0.0.1", ours)))
        .unwrap();
    let server = std::thread::spawn(move || {
        rt.block_on(serve(
            socket,
            Responder::new(
                handler,
                ServerConfig::default(),
                Security::PlainForLab(None),
            ),
        ))
    });
    let _ = server;

    // libcoap's, holding the same bytes (PUT with its own client).
    let theirs = free_port();
    let mut libcoap = Command::new("coap-server-notls")
        .args([
            "-A",
            "127.0.0.1",
            "-p",
            &theirs.to_string(),
            "-d",
            "4",
            "-v",
            "0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("coap-server-notls from Debian's libcoap3-bin");
    std::thread::sleep(Duration::from_millis(300));
    let their_url = format!("coap://127.0.0.1:{theirs}/ota/i/7");
    client(&[
        "-m",
        "put",
        "-b",
        "1024",
        "-B",
        "60",
        "-f",
        file.to_str().unwrap(),
        &their_url,
    ]);

    let our_url = format!("coap://127.0.0.1:{ours}/ota/i/7");
    // Interleaved run by run (alternating which goes first), so a change in machine load
    // weighs on both servers alike; the ratio is the median of the per-pair ratios.
    let mut pairs = Vec::with_capacity(runs);
    for run in 0..runs {
        let (ours_t, theirs_t) = if run % 2 == 0 {
            let o = download(&our_url, &img, &out);
            (o, download(&their_url, &img, &out))
        } else {
            let t = download(&their_url, &img, &out);
            (download(&our_url, &img, &out), t)
        };
        pairs.push((ours_t, theirs_t));
    }
    let _ = libcoap.kill();
    let _ = libcoap.wait();
    std::fs::remove_dir_all(&dir).unwrap();

    let blocks = SIZE / 1024;
    let t_ours = median(pairs.iter().map(|p| p.0).collect());
    let t_theirs = median(pairs.iter().map(|p| p.1).collect());
    let ratios: Vec<f64> = pairs
        .iter()
        .map(|(o, t)| t.as_secs_f64() / o.as_secs_f64())
        .collect();
    let (lo, hi) = ratios
        .iter()
        .fold((f64::MAX, 0.0f64), |(lo, hi), &r| (lo.min(r), hi.max(r)));
    println!(
        "1 MiB to coap-client-notls, Block2 1024, loopback, {runs} interleaved pairs of runs:"
    );
    println!("{:<28} {:>14} {:>12}", "server", "median time", "blocks/s");
    for (name, t) in [
        ("ota-transport-coap", t_ours),
        ("libcoap coap-server-notls", t_theirs),
    ] {
        println!(
            "{:<28} {:>11.1} ms {:>12.0}",
            name,
            t.as_secs_f64() * 1e3,
            blocks as f64 / t.as_secs_f64()
        );
    }
    println!(
        "ratio (libcoap time / ours), median of per-pair ratios: {:.2} (pairs ranged {lo:.2} to {hi:.2}; above 1 means ours is faster)",
        median(ratios)
    );
}
