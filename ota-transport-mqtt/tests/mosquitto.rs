//! Against a real mosquitto: an update with a broker restart in the middle, the cost of a
//! "nothing for you" wake, two servers on one shared subscription with one killed, the ACL, and
//! malformed payloads.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use std::sync::Arc;

use common::*;
use ota_core::device::SleepReason;
use ota_core::host::{Decision, DesiredState, Handler, MemImages, SingleRelease};
use ota_core::wire::WakeBudget;
use ota_core::wire::{CheckIn, ImageId};
use ota_core::Device;
use ota_transport_mqtt::server::ServerStats;
use rumqttc::{Client, Event as MqttEvent, MqttOptions, Packet, QoS};

/// What an update took.
struct Updated {
    wakes: u32,
    /// Connections over all wakes (more than `wakes` if one was lost during a wake).
    connects: u32,
    /// Payload bytes accepted, refetches included.
    accepted: u64,
}

/// Wakes device `id` (running release 4) until `img` is staged.
fn update(
    port: u16,
    id: &str,
    img: &[u8],
    budget: WakeBudget,
    mut between: impl FnMut(u32),
) -> Updated {
    let mut d = TestDevice::new(id, port, img.len() as u32 + 4096);
    let (mut accepted, mut connects) = (0, 0);
    for wake in 1..=60u32 {
        between(wake);
        let (out, dev) = d.wake(4, budget);
        let out = out.unwrap();
        accepted += dev.stats().payload_bytes_accepted;
        connects += out.connects;
        if out.reason == SleepReason::Staged {
            assert!(d.storage.staged(img.len()) == img, "staged bytes differ");
            return Updated {
                wakes: wake,
                connects,
                accepted,
            };
        }
    }
    panic!("not staged after 60 wakes");
}

#[test]
fn update_survives_a_broker_restart_mid_transfer() {
    let mut broker = Mosquitto::start("restart");
    let img = image(256 * 1024, 1);
    let _server = start_server(broker.broker("ota-server"), "srv-1", handler(&img));
    // Wakes of about 40 kB; the broker restarts (sessions saved and restored) before the fourth.
    let budget = WakeBudget {
        bytes: Some(40_000),
        millis: None,
    };
    let port = broker.port;
    let u = update(port, "dev-1", &img, budget, |wake| {
        if wake == 4 {
            broker.restart();
            assert_eq!(broker.port, port);
        }
    });
    assert!(u.wakes >= 7, "40 kB wakes for 256 KiB: {}", u.wakes);
    let refetched = u.accepted - img.len() as u64;
    println!(
        "256 KiB over MQTT in {} wakes with a broker restart between wakes; {refetched} bytes refetched",
        u.wakes
    );
    assert!(refetched <= 1024, "more than one chunk refetched");
}

#[test]
fn broker_restart_during_a_wake() {
    let mut broker = Mosquitto::start("restart-during");
    let img = image(256 * 1024, 2);
    let _server = start_server(broker.broker("ota-server"), "srv-1", handler(&img));
    let budget = WakeBudget {
        bytes: None,
        millis: Some(60_000),
    };
    let port = broker.port;
    let dev = std::thread::spawn(move || {
        let u = update(port, "dev-1", &img, budget, |_| {});
        (u, img.len() as u64)
    });
    // Restart once the download is under way (the broker saves and restores its sessions).
    std::thread::sleep(Duration::from_millis(400));
    broker.restart();
    let (u, len) = dev.join().unwrap();
    let refetched = u.accepted - len;
    println!(
        "256 KiB with the broker restarted during the wake: {} wakes, {} connections, {refetched} bytes refetched",
        u.wakes, u.connects
    );
    assert!(
        u.connects > u.wakes,
        "the restart should have cost a reconnection within a wake"
    );
    assert!(refetched <= 8 * 1024, "more than a window refetched");
}

#[test]
fn nothing_for_you_is_one_round_trip_on_the_retained_state() {
    let broker = Mosquitto::start("idle");
    let img = image(10_000, 3);
    let _server = start_server(broker.broker("ota-server"), "srv-1", handler(&img));
    let p = proxy(broker.port);
    // Already on the release (sequence 5): the first wake checks in and is told "up to date",
    // which the server also leaves as the retained desired state.
    let mut d = TestDevice::new("dev-2", p.port, 1 << 20);
    let budget = WakeBudget::default();
    let first = d.wake(5, budget).0.unwrap();
    assert_eq!(
        (first.reason, first.checked_in),
        (SleepReason::UpToDate, true)
    );
    std::thread::sleep(Duration::from_millis(200));
    let (up0, down0) = (p.up.get(), p.down.get());
    let second = d.wake(5, budget).0.unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let (up1, down1) = (p.up.get(), p.down.get());
    let (up, down) = (
        (up1.0 - up0.0, up1.1 - up0.1),
        (down1.0 - down0.0, down1.1 - down0.1),
    );
    assert_eq!(second.reason, SleepReason::UpToDate);
    assert!(
        !second.checked_in,
        "the retained desired state should settle it"
    );
    println!(
        "\"nothing for you\" over MQTT: {} packets up ({} B), {} packets down ({} B), TCP payload from connect to disconnect",
        up.0, up.1, down.0, down.1
    );
    // CONNECT, SUBSCRIBE, DISCONNECT up; CONNACK, SUBACK, the retained state down.
    assert_eq!((up.0, down.0), (3, 3), "packets");
    assert!(up.1 + down.1 < 200, "{} bytes", up.1 + down.1);
}

/// A desired state whose release can be swapped, recording each device's last check-in so the
/// test can republish, as `ota-server` does from its store.
struct Switchable {
    release: std::sync::RwLock<SingleRelease>,
    last: std::sync::Mutex<Vec<u8>>,
}

impl DesiredState for Switchable {
    fn decide(&self, c: &CheckIn<'_>) -> Decision {
        *self.last.lock().unwrap() =
            ota_core::wire::encode_vec(&ota_core::wire::Message::CheckIn(c.clone()));
        self.peek(c)
    }
    fn peek(&self, c: &CheckIn<'_>) -> Decision {
        self.release.read().unwrap().decide(c)
    }
    fn may_fetch(&self, device: &str, image: ota_core::wire::ImageId) -> bool {
        self.release.read().unwrap().may_fetch(device, image)
    }
}

#[test]
fn a_new_release_is_republished_to_sleeping_devices() {
    let broker = Mosquitto::start("republish");
    let old = image(8_000, 8);
    let new = image(40_000, 9);
    let images = MemImages::new();
    images.insert(ImageId(1), old.clone());
    images.insert(ImageId(2), new.clone());
    let desired = Arc::new(Switchable {
        release: std::sync::RwLock::new(release(ImageId(1), &old, 5)),
        last: Default::default(),
    });
    let handler = Arc::new(Handler::new(desired.clone(), images, 1024));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = ota_transport_mqtt::server::Server::new(
        &broker.broker("ota-server"),
        "srv-1",
        "ota-servers",
    );
    let publisher = server.publisher();
    rt.spawn(server.run(handler.clone(), Arc::new(ServerStats::default())));
    std::thread::sleep(Duration::from_millis(300));

    // On sequence 5: the first wake checks in, the second reads "up to date" and sleeps.
    let mut d = TestDevice::new("dev-3", broker.port, 1 << 20);
    let budget = WakeBudget::default();
    for checks_in in [true, false] {
        let out = d.wake(5, budget).0.unwrap();
        assert_eq!(
            (out.reason, out.checked_in),
            (SleepReason::UpToDate, checks_in)
        );
    }
    // Sequence 6 is released while the device sleeps: the server republishes its desired state
    // from its last check-in, and the next wake finds it and downloads.
    *desired.release.write().unwrap() = release(ImageId(2), &new, 6);
    let last = desired.last.lock().unwrap().clone();
    let Ok(ota_core::wire::Message::CheckIn(c)) = ota_core::wire::decode(&last) else {
        panic!("no check-in recorded")
    };
    let state = handler.desired_state(&c);
    rt.block_on(publisher.desired("dev-3", state.clone()))
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let out = d.wake(5, budget).0.unwrap();
    assert!(out.checked_in);
    assert_eq!(out.reason, SleepReason::Staged);
    assert!(d.storage.staged(new.len()) == new);
    println!(
        "republished desired state: {} bytes; the sleeping device checked in and staged the new release",
        state.len()
    );
}

#[test]
fn two_servers_share_the_fleet_and_one_dies() {
    let broker = Mosquitto::start("shared");
    let img = image(256 * 1024, 4);
    let a = start_server(broker.broker("ota-server"), "srv-a", handler(&img));
    let b = start_server(broker.broker("ota-server-2"), "srv-b", handler(&img));
    let (a_stats, b_stats) = (a.stats.clone(), b.stats.clone());
    let killer = std::thread::spawn(move || {
        // Kill A once it has answered a good share of the requests.
        for _ in 0..400 {
            if a.stats.answered.load(Ordering::Relaxed) >= 40 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(a);
    });
    let u = update(broker.port, "dev-3", &img, WakeBudget::default(), |_| {});
    killer.join().unwrap();
    let (na, nb) = (
        a_stats.answered.load(Ordering::Relaxed),
        b_stats.answered.load(Ordering::Relaxed),
    );
    let refetched = u.accepted - img.len() as u64;
    println!(
        "shared subscription: server A answered {na} before it died, B {nb}; refetched {refetched} bytes"
    );
    assert!(
        na >= 40 && nb > 0,
        "both instances should have served: {na} / {nb}"
    );
    assert!(refetched <= 1024, "more than one chunk refetched");
}

fn connect(port: u16, user: &str) -> (Client, rumqttc::Connection) {
    let mut o = MqttOptions::new(format!("{user}-probe"), "127.0.0.1", port);
    o.set_credentials(user, PASSWORD);
    Client::new(o, 16)
}

#[test]
fn acl_keeps_a_device_to_its_own_topics() {
    let broker = Mosquitto::start("acl");
    let img = image(5000, 5);
    let server = start_server(broker.broker("ota-server"), "srv-1", handler(&img));
    // dev-1 runs a wake on dev-2's topics with its own credentials: the broker refuses the
    // subscription (MQTT 5 SUBACK "not authorized") and the wake ends with that error.
    let mut impostor = TestDevice::logging_in_as("dev-2", "dev-1", broker.port, 1 << 20);
    let budget = WakeBudget::default();
    let refused = impostor.wake(4, budget).0;
    println!("dev-1 on dev-2's topics: {refused:?}");
    assert!(
        matches!(
            refused,
            Err(ota_core::runtime::WakeError::Link(
                ota_transport_mqtt::device::MqttError::Refused(minimq::ReasonCode::NotAuthorized)
            ))
        ),
        "{refused:?}"
    );
    // An MQTT 3.1.1 spy as dev-1 on dev-2's reply and desired-state topics (mosquitto 2.0
    // grants such a subscription to a 3.1.1 client but delivers nothing the ACL denies).
    let (spy, mut spy_conn) = connect(broker.port, "dev-1");
    spy.subscribe("ota/dev-2/d", QoS::AtLeastOnce).unwrap();
    spy.subscribe("ota/dev-2/s", QoS::AtLeastOnce).unwrap();
    spy.subscribe("ota/+/d", QoS::AtLeastOnce).unwrap();
    for _ in 0..5 {
        let _ = spy_conn.recv_timeout(Duration::from_millis(100));
    }
    // dev-1 writes a check-in into dev-2's topic: the broker drops it.
    let mut dev: Device<_> = Device::new(config("dev-2", 4, 1 << 20), verifier());
    dev.wake(ota_core::Instant(0), WakeBudget::default());
    let mut buf = [0u8; 256];
    let n = dev
        .poll_transmit(ota_core::Instant(0), &mut buf)
        .unwrap()
        .len;
    spy.publish("ota/dev-2/c", QoS::AtLeastOnce, false, buf[..n].to_vec())
        .unwrap();
    for _ in 0..5 {
        let _ = spy_conn.recv_timeout(Duration::from_millis(100));
    }
    let s = &server.stats;
    assert_eq!(
        s.answered.load(Ordering::Relaxed) + s.dropped.load(Ordering::Relaxed),
        0,
        "a foreign publish reached the server"
    );
    // The real dev-2 checks in: the server answers on dev-2's topics, and dev-1 hears none of it.
    let out = TestDevice::new("dev-2", broker.port, 1 << 20)
        .wake(5, budget)
        .0
        .unwrap();
    assert!(out.checked_in);
    assert_eq!(s.answered.load(Ordering::Relaxed), 1);
    for _ in 0..10 {
        if let Ok(Ok(MqttEvent::Incoming(Packet::Publish(p)))) =
            spy_conn.recv_timeout(Duration::from_millis(100))
        {
            panic!("dev-1 received {} meant for dev-2", p.topic);
        }
    }
}

#[test]
fn malformed_payloads_are_dropped_and_serving_goes_on() {
    let broker = Mosquitto::start("garbage");
    let img = image(60 * 1024, 6);
    let server = start_server(broker.broker("ota-server"), "srv-1", handler(&img));
    let port = broker.port.to_string();
    // Garbage, a truncated check-in, and a check-in that claims another device's id.
    let mut dev: Device<_> = Device::new(config("dev-2", 4, 1 << 20), verifier());
    dev.wake(ota_core::Instant(0), WakeBudget::default());
    let mut buf = [0u8; 256];
    let n = dev
        .poll_transmit(ota_core::Instant(0), &mut buf)
        .unwrap()
        .len;
    let foreign = std::env::temp_dir().join(format!("ota-mqtt-foreign-{}", std::process::id()));
    std::fs::write(&foreign, &buf[..n]).unwrap();
    let truncated = std::env::temp_dir().join(format!("ota-mqtt-trunc-{}", std::process::id()));
    std::fs::write(&truncated, &buf[..n / 2]).unwrap();
    for args in [
        vec!["-t", "ota/dev-1/c", "-m", "not an ota message"],
        vec!["-t", "ota/dev-1/q", "-m", "\u{1}\u{2}\u{3}"],
        vec!["-t", "ota/dev-1/c", "-f", truncated.to_str().unwrap()],
        vec!["-t", "ota/dev-1/c", "-f", foreign.to_str().unwrap()],
    ] {
        let st = std::process::Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-u",
                "dev-1",
                "-P",
                PASSWORD,
                "-q",
                "1",
            ])
            .args(&args)
            .status()
            .expect(
                "mosquitto_pub (Debian mosquitto-clients) must be installed: .ci/run installs it",
            );
        assert!(st.success());
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        server.stats.dropped.load(Ordering::Relaxed),
        4,
        "every bad payload is dropped"
    );
    assert_eq!(server.stats.answered.load(Ordering::Relaxed), 0);
    update(broker.port, "dev-1", &img, WakeBudget::default(), |_| {});
    std::fs::remove_file(foreign).unwrap();
    std::fs::remove_file(truncated).unwrap();
}

#[test]
fn cost_of_one_update() {
    let broker = Mosquitto::start("cost");
    let img = image(256 * 1024, 7);
    let _server = start_server(broker.broker("ota-server"), "srv-1", handler(&img));
    let p = proxy(broker.port);
    let mut d = TestDevice::new("dev-1", p.port, img.len() as u32 + 4096);
    let (out, dev) = d.wake(4, WakeBudget::default());
    assert_eq!(out.unwrap().reason, SleepReason::Staged);
    assert!(d.storage.staged(img.len()) == img);
    std::thread::sleep(Duration::from_millis(200));
    let (up, down) = (p.up.get(), p.down.get());
    let ratio = (up.1 + down.1) as f64 / img.len() as f64;
    println!(
        "one 256 KiB update over MQTT (1 KiB chunks, QoS 1): {} packets up ({} B), {} packets down ({} B), {ratio:.3} bytes per image byte",
        up.0, up.1, down.0, down.1
    );
    // The device's own count of link bytes (messages plus MQTT framing) matches the wire.
    let counted = dev.stats().bytes_sent + dev.stats().bytes_received;
    println!(
        "device-counted link bytes {counted} vs {} on the wire",
        up.1 + down.1
    );
    assert!(ratio < 1.10, "{ratio}");
}

#[test]
fn a_wake_with_no_broker_ends_on_its_time_budget() {
    // Nothing listens on the port: every dial is refused at once, and the device's check-in
    // retries (1 s, 2 s, 4 s, ...) would outlast the 1.5 s budget.
    let mut d = TestDevice::new("dev-1", free_port(), 1 << 20);
    let budget = WakeBudget {
        bytes: None,
        millis: Some(1_500),
    };
    let out = d.wake(4, budget).0.unwrap();
    assert_eq!(
        (out.reason, out.connects, out.checked_in),
        (SleepReason::BudgetExhausted, 0, false)
    );
}

#[test]
fn short_wakes_waste_nothing_between_wakes() {
    // Wakes end on their time budget with chunk requests in flight; with the session kept
    // through sleep, nothing the server sends after a wake ends may reach the device later.
    let broker = Mosquitto::start("short-wakes");
    let img = image(512 * 1024, 10);
    let _server = start_server(broker.broker("ota-server"), "srv-1", handler(&img));
    let p = proxy(broker.port);
    let budget = WakeBudget {
        bytes: None,
        millis: Some(600),
    };
    let mut d = TestDevice::new("dev-1", p.port, img.len() as u32 + 4096);
    let (mut wakes, mut dropped, mut stale) = (0, 0u64, 0u64);
    loop {
        wakes += 1;
        assert!(wakes <= 200, "not staged after 200 wakes");
        let out = d.wake(4, budget).0.unwrap();
        dropped += u64::from(out.ignored);
        stale += u64::from(out.stale);
        if out.reason == SleepReason::Staged {
            break;
        }
    }
    assert!(d.storage.staged(img.len()) == img);
    std::thread::sleep(Duration::from_millis(200));
    let down = p.down.get();
    let ratio = down.1 as f64 / img.len() as f64;
    println!(
        "512 KiB in {wakes} wakes of 600 ms: {} bytes down ({ratio:.3} per image byte), {dropped} messages received and dropped, {stale} of them left from an earlier wake",
        down.1
    );
    assert_eq!(stale, 0, "answers from an earlier wake were delivered");
}
