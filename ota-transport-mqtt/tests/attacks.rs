//! Attacks on the MQTT service from a device's own credentials, against mosquitto configured as
//! `broker/` ships it and the real server: joining the servers' shared subscription, taking
//! over another device's client id, oversized publishes, and a device whose flash went back to
//! an old image trusting a retained "up to date".
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use ota_core::device::SleepReason;
use ota_core::wire::WakeBudget;
use rumqttc::{Client, Event, MqttOptions, Packet, QoS, SubscribeReasonCode};

fn login(port: u16, user: &str, client_id: &str) -> (Client, rumqttc::Connection) {
    let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
    o.set_credentials(user, PASSWORD);
    o.set_keep_alive(Duration::from_secs(5));
    Client::new(o, 64)
}

/// Polls `conn` for `ms`, returning the events seen.
fn drain(conn: &mut rumqttc::Connection, ms: u64) -> Vec<Result<Event, String>> {
    let end = Instant::now() + Duration::from_millis(ms);
    let mut seen = Vec::new();
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        match conn.recv_timeout(left) {
            Ok(Ok(e)) => seen.push(Ok(e)),
            Ok(Err(e)) => {
                seen.push(Err(e.to_string()));
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(_) => break,
        }
    }
    seen
}

#[test]
fn a_device_cannot_join_the_servers_shared_subscription() {
    let broker = Mosquitto::start("share-attack");
    let img = image(128 * 1024, 21);
    let server = start_server(broker.broker("ota-server"), "srv-1", handler(&img));
    // dev-1, with its own credentials, asks for the servers' group and for everyone's requests.
    let (spy, mut conn) = login(broker.port, "dev-1", "dev-1");
    for filter in [
        "$share/ota-servers/ota/+/q",
        "$share/ota-servers/ota/+/c",
        "ota/+/q",
        "ota/#",
    ] {
        spy.subscribe(filter, QoS::AtLeastOnce).unwrap();
    }
    let refused = drain(&mut conn, 500)
        .into_iter()
        .filter_map(|e| match e {
            Ok(Event::Incoming(Packet::SubAck(a))) => Some(a.return_codes),
            _ => None,
        })
        .flatten()
        .filter(|c| *c == SubscribeReasonCode::Failure)
        .count();
    assert_eq!(
        refused, 4,
        "every subscription beyond its own topics is refused"
    );
    // dev-3 updates while the spy stays connected: every request reaches the server.
    let mut d = TestDevice::new("dev-3", broker.port, img.len() as u32 + 4096);
    let (out, dev) = d.wake(4, WakeBudget::default());
    let out = out.unwrap();
    let spied = drain(&mut conn, 200)
        .iter()
        .filter(|e| matches!(e, Ok(Event::Incoming(Packet::Publish(_)))))
        .count();
    println!(
        "4 subscriptions refused; 128 KiB staged in one wake, {} retransmissions, {} answered, {spied} publishes reached the spy",
        dev.stats().retransmissions,
        server.stats.answered.load(Ordering::Relaxed)
    );
    assert_eq!(out.reason, SleepReason::Staged);
    assert_eq!(dev.stats().retransmissions, 0, "no request was black-holed");
    assert_eq!(spied, 0);
}

#[test]
fn a_device_cannot_take_over_another_devices_session() {
    let broker = Mosquitto::start("takeover");
    // dev-2 online, subscribed to its own down topic.
    let (victim, mut vconn) = login(broker.port, "dev-2", "dev-2");
    victim.subscribe("ota/dev-2/d", QoS::AtLeastOnce).unwrap();
    drain(&mut vconn, 300);
    // dev-1 logs in 15 times asking for dev-2's client id.
    for _ in 0..15 {
        let (c, mut conn) = login(broker.port, "dev-1", "dev-2");
        drain(&mut conn, 60);
        let _ = c.disconnect();
        drain(&mut conn, 20);
    }
    let kicked = drain(&mut vconn, 500)
        .iter()
        .filter(|e| e.is_err() || matches!(e, Ok(Event::Incoming(Packet::ConnAck(_)))))
        .count();
    let log = broker.log();
    let takeovers = log.matches("already connected").count();
    println!("15 logins as dev-1 asking for client id dev-2: {kicked} drops of dev-2, {takeovers} takeovers in the broker log");
    assert_eq!(kicked, 0, "dev-2 was disconnected");
    assert!(
        !log.contains("Client dev-2 already connected"),
        "the broker let dev-1 take dev-2's client id"
    );
}

#[test]
fn oversized_publishes_leave_the_server_connected() {
    let broker = Mosquitto::start("oversize");
    let img = image(96 * 1024, 22);
    let server = start_server(broker.broker("ota-server"), "srv-1", handler(&img));
    let port = broker.port;
    // dev-1 floods its own request topic with payloads twice the broker's limit and payloads
    // just under it, every 20 ms, while dev-4 updates.
    let flood = std::thread::spawn(move || {
        let (c, mut conn) = login(port, "dev-1", "dev-1");
        let mut sent = 0;
        for i in 0..60 {
            let size = if i % 2 == 0 { 8 * 1024 } else { 3 * 1024 };
            if c.try_publish("ota/dev-1/q", QoS::AtMostOnce, false, vec![0xA5; size])
                .is_ok()
            {
                sent += 1;
            }
            drain(&mut conn, 20);
        }
        sent
    });
    let mut d = TestDevice::new("dev-4", port, img.len() as u32 + 4096);
    let (out, _) = d.wake(4, WakeBudget::default());
    let sent = flood.join().unwrap();
    let connects = server.stats.connects.load(Ordering::Relaxed);
    println!(
        "{sent} oversized or near-limit publishes during an update: server connections {connects}, dropped {}",
        server.stats.dropped.load(Ordering::Relaxed)
    );
    assert_eq!(out.unwrap().reason, SleepReason::Staged);
    assert_eq!(connects, 1, "the server's connection was dropped");
}

#[test]
fn a_device_flashed_back_checks_in_despite_a_retained_up_to_date() {
    let broker = Mosquitto::start("wiped");
    let img = image(20_000, 23);
    let _server = start_server(broker.broker("ota-server"), "srv-1", handler(&img));
    // dev-2 runs the release (sequence 5): told "up to date", which stays retained for it.
    let mut d = TestDevice::new("dev-2", broker.port, img.len() as u32 + 4096);
    let first = d.wake(5, WakeBudget::default()).0.unwrap();
    assert_eq!(first.reason, SleepReason::UpToDate);
    std::thread::sleep(Duration::from_millis(200));
    let again = d.wake(5, WakeBudget::default()).0.unwrap();
    assert!(
        !again.checked_in,
        "the retained state settles a device on that image"
    );
    // Its flash is rewritten with release 1 by hand: the retained state names another image.
    let wiped = d.wake(1, WakeBudget::default()).0.unwrap();
    println!(
        "after a wipe back to release 1: checked in {}, {:?}",
        wiped.checked_in, wiped.reason
    );
    assert!(
        wiped.checked_in,
        "the wiped device trusted a state meant for another image"
    );
    assert_eq!(wiped.reason, SleepReason::Staged);
}
