//! Against a real mosquitto: an update with a broker restart in the middle, the cost of a
//! "nothing for you" wake, two servers on one shared subscription with one killed, the ACL, and
//! malformed payloads.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use ota_core::device::SleepReason;
use ota_core::storage::MemStorage;
use ota_core::wire::WakeBudget;
use ota_core::{Device, Event};
use ota_transport_mqtt::device::run_wake;
use ota_transport_mqtt::Broker;
use rumqttc::{Client, Event as MqttEvent, MqttOptions, Packet, QoS};

/// Wakes `id` until the image is staged; returns (wakes, payload bytes accepted).
fn update(
    broker: &Broker,
    id: &str,
    img: &[u8],
    storage: &mut MemStorage,
    budget: WakeBudget,
    mut between: impl FnMut(u32),
) -> (u32, u64) {
    let mut accepted = 0;
    for wake in 1..=60u32 {
        between(wake);
        let mut dev: Device<_> = Device::new(config(id, 4, img.len() as u32 + 4096), verifier());
        let out = run_wake(&mut dev, storage, broker, id, budget, |e| {
            if let Event::ManifestRejected(e) = e {
                panic!("manifest rejected: {e}");
            }
        })
        .unwrap();
        accepted += dev.stats().payload_bytes_accepted;
        if out.reason == SleepReason::Staged {
            assert!(storage.staged(img.len()) == img, "staged bytes differ");
            return (wake, accepted);
        }
    }
    panic!("not staged after 60 wakes");
}

#[test]
fn update_survives_a_broker_restart_mid_transfer() {
    let mut broker = Mosquitto::start("restart");
    let img = image(256 * 1024, 1);
    let _server = start_server(broker.broker("ota-server"), "srv-1", handler(&img));
    let mut storage = MemStorage::new(img.len() as u32 + 4096);
    // Wakes of about 40 kB; the broker restarts (sessions saved and restored) before the fourth.
    let budget = WakeBudget {
        bytes: Some(40_000),
        millis: None,
    };
    let port = broker.port;
    let dev_broker = broker.broker("dev-1");
    let (wakes, accepted) = update(&dev_broker, "dev-1", &img, &mut storage, budget, |wake| {
        if wake == 4 {
            broker.restart();
            assert_eq!(broker.port, port);
        }
    });
    assert!(wakes >= 7, "40 kB wakes for 256 KiB: {wakes}");
    println!(
        "256 KiB over MQTT in {wakes} wakes with a broker restart; {} bytes refetched",
        accepted - img.len() as u64
    );
}

#[test]
fn broker_restart_during_a_wake() {
    let mut broker = Mosquitto::start("restart-during");
    let img = image(128 * 1024, 2);
    let _server = start_server(broker.broker("ota-server"), "srv-1", handler(&img));
    let dev_broker = broker.broker("dev-1");
    let mut storage = MemStorage::new(img.len() as u32 + 4096);
    let budget = WakeBudget {
        bytes: None,
        millis: Some(20_000),
    };
    let dev = std::thread::spawn(move || {
        update(&dev_broker, "dev-1", &img, &mut storage, budget, |_| {})
    });
    std::thread::sleep(Duration::from_millis(150));
    broker.restart();
    let (wakes, _) = dev.join().unwrap();
    println!("restart during a wake: staged after {wakes} wakes");
}

#[test]
fn nothing_for_you_is_one_round_trip_on_the_retained_state() {
    let broker = Mosquitto::start("idle");
    let img = image(10_000, 3);
    let _server = start_server(broker.broker("ota-server"), "srv-1", handler(&img));
    let p = proxy(broker.port);
    let via_proxy = Broker {
        port: p.port,
        ..broker.broker("dev-2")
    };
    // Already on the release (sequence 5): the first wake checks in and is told "up to date",
    // which the server also leaves as the retained desired state.
    let mut storage = MemStorage::new(1 << 20);
    let mut dev: Device<_> = Device::new(config("dev-2", 5, 1 << 20), verifier());
    let first = run_wake(
        &mut dev,
        &mut storage,
        &via_proxy,
        "dev-2",
        WakeBudget::default(),
        |_| {},
    )
    .unwrap();
    assert_eq!(
        (first.reason, first.checked_in),
        (SleepReason::UpToDate, true)
    );
    std::thread::sleep(Duration::from_millis(200));
    let (u0, d0) = (p.up.load(Ordering::Relaxed), p.down.load(Ordering::Relaxed));
    let mut dev: Device<_> = Device::new(config("dev-2", 5, 1 << 20), verifier());
    let second = run_wake(
        &mut dev,
        &mut storage,
        &via_proxy,
        "dev-2",
        WakeBudget::default(),
        |_| {},
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let (up, down) = (
        p.up.load(Ordering::Relaxed) - u0,
        p.down.load(Ordering::Relaxed) - d0,
    );
    assert_eq!(second.reason, SleepReason::UpToDate);
    assert!(
        !second.checked_in,
        "the retained desired state should settle it"
    );
    println!("\"nothing for you\" over MQTT: {} packets, {up} bytes up, {down} bytes down (TCP payload, connect to disconnect)", second.packets);
    assert!(
        second.packets <= 10 && up + down < 400,
        "{} packets, {} bytes",
        second.packets,
        up + down
    );
}

#[test]
fn two_servers_share_the_fleet_and_one_dies() {
    let broker = Mosquitto::start("shared");
    let img = image(256 * 1024, 4);
    let a = start_server(broker.broker("ota-server"), "srv-a", handler(&img));
    let b = start_server(broker.broker("ota-server"), "srv-b", handler(&img));
    let dev_broker = broker.broker("dev-3");
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
    let mut storage = MemStorage::new(img.len() as u32 + 4096);
    let (_, accepted) = update(
        &dev_broker,
        "dev-3",
        &img,
        &mut storage,
        WakeBudget::default(),
        |_| {},
    );
    killer.join().unwrap();
    let (na, nb) = (
        a_stats.answered.load(Ordering::Relaxed),
        b_stats.answered.load(Ordering::Relaxed),
    );
    println!(
        "shared subscription: server A answered {na} before it died, B {nb}; refetched {} bytes",
        accepted - img.len() as u64
    );
    assert!(
        na >= 40 && nb > 0,
        "both instances should have served: {na} / {nb}"
    );
    assert!(
        accepted - img.len() as u64 <= 1024,
        "more than one chunk refetched"
    );
}

fn connect(broker: &Broker, user: &str) -> (Client, rumqttc::Connection) {
    let mut o = MqttOptions::new(format!("{user}-probe"), "127.0.0.1", broker.port);
    o.set_credentials(user, PASSWORD);
    Client::new(o, 16)
}

#[test]
fn acl_keeps_a_device_to_its_own_topics() {
    let broker = Mosquitto::start("acl");
    let img = image(5000, 5);
    let server = start_server(broker.broker("ota-server"), "srv-1", handler(&img));
    // dev-1 listens on dev-2's reply and desired-state topics (mosquitto 2.0 grants the
    // subscription for MQTT 3.1.1 clients but delivers nothing the ACL does not allow).
    let (spy, mut spy_conn) = connect(&broker.broker("dev-1"), "dev-1");
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
    let n = dev.poll_transmit(ota_core::Instant(0), &mut buf).unwrap();
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
    let mut storage = MemStorage::new(1 << 20);
    let mut dev2: Device<_> = Device::new(config("dev-2", 5, 1 << 20), verifier());
    let out = run_wake(
        &mut dev2,
        &mut storage,
        &broker.broker("dev-2"),
        "dev-2",
        WakeBudget::default(),
        |_| {},
    )
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
    let n = dev.poll_transmit(ota_core::Instant(0), &mut buf).unwrap();
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
    let mut storage = MemStorage::new(img.len() as u32 + 4096);
    update(
        &broker.broker("dev-1"),
        "dev-1",
        &img,
        &mut storage,
        WakeBudget::default(),
        |_| {},
    );
    std::fs::remove_file(foreign).unwrap();
    std::fs::remove_file(truncated).unwrap();
}

#[test]
fn cost_of_one_update() {
    let broker = Mosquitto::start("cost");
    let img = image(256 * 1024, 7);
    let _server = start_server(broker.broker("ota-server"), "srv-1", handler(&img));
    let p = proxy(broker.port);
    let via_proxy = Broker {
        port: p.port,
        ..broker.broker("dev-1")
    };
    let mut storage = MemStorage::new(img.len() as u32 + 4096);
    let mut dev: Device<_> = Device::new(config("dev-1", 4, img.len() as u32 + 4096), verifier());
    let out = run_wake(
        &mut dev,
        &mut storage,
        &via_proxy,
        "dev-1",
        WakeBudget::default(),
        |_| {},
    )
    .unwrap();
    assert_eq!(out.reason, SleepReason::Staged);
    assert!(storage.staged(img.len()) == img);
    std::thread::sleep(Duration::from_millis(200));
    let (up, down) = (p.up.load(Ordering::Relaxed), p.down.load(Ordering::Relaxed));
    let ratio = (up + down) as f64 / img.len() as f64;
    println!(
        "one 256 KiB update over MQTT (1 KiB chunks, QoS 1): {} packets, {up} bytes up, {down} bytes down, {ratio:.3} bytes per image byte",
        out.packets
    );
    assert!(ratio < 1.10, "{ratio}");
}
