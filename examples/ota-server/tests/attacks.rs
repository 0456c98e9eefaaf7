//! Attacks on `ota-server serve` over CoAP, from a plain host on the network and from a
//! provisioned device's own credentials (issue cases 3, 4, 5, 9, 10): every one refused with a
//! clear code, logged, and nothing recorded for anyone else.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::process::Command;

use common::*;
use ota_core::wire::{encode_vec, ImageId, Message, Phase, Report, ResultCode};
use ota_transport_coap::ClientError;

fn image(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(seed) ^ seed)
        .collect()
}

#[test]
fn a_plain_host_creates_nothing() {
    let data = Data::new("plain-host");
    data.release("sensor", "1.1.0", &image(40_000, 3), true);
    data.provision("dev-1", "sensor");
    let server = Server::start(&data, &[]);
    let db_before = dir_bytes(&data.path("data"));
    let socket = server.socket();
    // 3 000 check-ins under new ids, as any host on the network could send them.
    let mut refused = 0;
    for i in 0..3000u16 {
        let id = format!("ghost-{i}");
        let r = exchange(
            &socket,
            &plain_post(b"c", &raw_checkin(id.as_bytes(), "sensor"), i),
        );
        refused += usize::from(code(&r) == "4.01");
    }
    // A forged report for a provisioned device, and libcoap fetching an image block.
    let forged = encode_vec(&Message::Report(Report {
        device_id: b"dev-1",
        image: ImageId(1),
        phase: Phase::Failed,
        result: ResultCode::INTEGRITY_FAILURE,
    }));
    let r = exchange(&socket, &plain_post(b"r", &forged, 9999));
    assert_eq!(code(&r), "4.01");
    let out = Command::new("coap-client-notls")
        .args([
            "-m",
            "get",
            "-B",
            "3",
            &format!("coap://127.0.0.1:{}/ota/i/1", server.port),
        ])
        .output()
        .expect("coap-client-notls (Debian libcoap3-bin) must be installed: .ci/run installs it");
    let libcoap =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let status = data.status();
    let db_after = dir_bytes(&data.path("data"));
    println!(
        "3000 plain check-ins: {refused} refused 4.01; devices in status: {}; data directory {db_before} -> {db_after} bytes; libcoap GET: {}",
        status.lines().count() - 1,
        libcoap.trim()
    );
    assert_eq!(refused, 3000);
    assert_eq!(
        status.lines().count(),
        1,
        "no device row was created:\n{status}"
    );
    assert!(libcoap.contains("4.01"), "libcoap got: {libcoap}");
    assert!(server.log().contains("refused 4.01"), "refusals are logged");
    assert!(db_after < db_before + 64 * 1024, "the store grew");
}

#[test]
fn a_device_speaks_only_for_itself() {
    let data = Data::new("own-id");
    data.release("sensor", "1.1.0", &image(30_000, 5), true);
    let dev1 = data.provision("dev-1", "sensor");
    let dev2 = data.provision("dev-2", "sensor");
    let server = Server::start(&data, &[]);
    let socket = server.socket();
    // dev-1's credentials, a check-in claiming dev-2: refused 4.03.
    let mut impostor = client(&data, "dev-2", "sensor", Some(&dev1));
    let mut r = check_in(&mut impostor, &socket);
    assert_eq!(code(&r), "4.03");
    assert_eq!(
        impostor.handle_datagram(ota_core::Instant(1), &mut r),
        Err(ClientError::Response((4 << 5) | 3))
    );
    // A report claiming dev-2 "rolled back": the state machine sends it sealed as dev-1.
    let forged = encode_vec(&Message::Report(Report {
        device_id: b"dev-2",
        image: ImageId(1),
        phase: Phase::RolledBack,
        result: ResultCode::HEALTH_CHECK_FAILED,
    }));
    let sealed = seal_post(&dev1, b"r", &forged, fresh_sequence());
    assert_eq!(code(&exchange(&socket, &sealed)), "4.03");
    let status = data.status();
    assert!(!status.contains("dev-2"), "dev-2 has a row:\n{status}");
    assert!(server
        .log()
        .contains("claims device \"dev-2\" but comes from \"dev-1\""));
    // dev-2 itself checks in and is offered the release.
    let mut real = client(&data, "dev-2", "sensor", Some(&dev2));
    let mut r = check_in(&mut real, &socket);
    if let Err(e) = real.handle_datagram(ota_core::Instant(1), &mut r) {
        panic!("{e}: {}", server.log());
    }
    let offered = std::iter::from_fn(|| real.device_mut().poll_event())
        .any(|e| matches!(e, ota_core::Event::UpdateOffered { .. }));
    assert!(
        offered,
        "dev-2 was not offered its update:\n{}",
        server.log()
    );
    println!(
        "dev-1 claiming dev-2: check-in and report refused 4.03, logged; dev-2 offered its update"
    );
}

/// A plain POST sealed with `ctx` by hand (sequence `seq`), as a device's own client would
/// seal it whatever it says inside.
fn seal_post(ctx: &ota_oscore::SecurityContext, seg: &[u8], payload: &[u8], seq: u64) -> Vec<u8> {
    use coap_message::MinimalWritableMessage as _;
    use ota_transport_coap::resources::{code, opt, ROOT};
    use ota_transport_coap::secure::{build_inner, option_bytes};
    use ota_transport_coap::udp::{build, MsgType};
    let mut inner = vec![0u8; 512];
    let n = build_inner(&mut inner, |m| {
        m.set_code(code::POST);
        m.add_option(opt::URI_PATH, ROOT)?;
        m.add_option(opt::URI_PATH, seg)?;
        m.set_payload(payload)
    })
    .unwrap();
    let (id, sealed) = ctx.seal_request(seq, &mut inner, n).unwrap();
    let (value, vlen) = option_bytes(&id.option());
    let mut out = vec![0u8; 1024];
    let n = build(&mut out, MsgType::Con, seq as u16, &[1, 2], |m| {
        m.set_code(code::POST);
        m.add_option(opt::OSCORE, &value[..vlen])?;
        m.set_payload(&inner[..sealed])
    })
    .unwrap();
    out.truncate(n);
    out
}

/// A sealed GET of block 0 of `image`.
fn seal_get(ctx: &ota_oscore::SecurityContext, image: u32, seq: u64) -> Vec<u8> {
    use coap_message::MinimalWritableMessage as _;
    use ota_transport_coap::resources::{code, opt, IMAGE, ROOT};
    use ota_transport_coap::secure::{build_inner, option_bytes};
    use ota_transport_coap::udp::{build, MsgType};
    let mut inner = vec![0u8; 128];
    let seg = image.to_string();
    let n = build_inner(&mut inner, |m| {
        m.set_code(code::GET);
        m.add_option(opt::URI_PATH, ROOT)?;
        m.add_option(opt::URI_PATH, IMAGE)?;
        m.add_option(opt::URI_PATH, seg.as_bytes())?;
        m.add_option(opt::BLOCK2, &[0x06])
    })
    .unwrap();
    let (id, sealed) = ctx.seal_request(seq, &mut inner, n).unwrap();
    let (value, vlen) = option_bytes(&id.option());
    let mut out = vec![0u8; 256];
    let n = build(&mut out, MsgType::Con, seq as u16, &[3, 4], |m| {
        m.set_code(code::POST);
        m.add_option(opt::OSCORE, &value[..vlen])?;
        m.set_payload(&inner[..sealed])
    })
    .unwrap();
    out.truncate(n);
    out
}

#[test]
fn images_go_only_to_devices_they_are_offered_to() {
    let data = Data::new("images");
    // 20 releases of 1 MiB never rolled out, one of another class rolled out, one rolled out
    // to dev-1's class.
    for i in 0..20u8 {
        data.release("sensor", &format!("1.{i}.0"), &image(1 << 20, i + 1), false);
    }
    data.release("pump", "1.0.0", &image(50_000, 99), true);
    data.release("sensor", "2.0.0", &image(50_000, 77), true);
    let dev1 = data.provision("dev-1", "sensor");
    let server = Server::start(&data, &[]);
    let socket = server.socket();
    let rss_before = server.rss_kib();
    let mut codes = Vec::new();
    for id in 1..=21u32 {
        codes.push(code(&exchange(
            &socket,
            &seal_get(&dev1, id, fresh_sequence()),
        )));
    }
    let rss_after = server.rss_kib();
    // The image rolled out to its class: served (sealed, 2.04 outside).
    let ok = exchange(&socket, &seal_get(&dev1, 22, fresh_sequence()));
    println!(
        "dev-1 asking for 20 unreleased 1 MiB images and one of another class: {:?}; rolled-out image: {}; server RSS {rss_before} -> {rss_after} KiB",
        codes.iter().collect::<std::collections::BTreeSet<_>>(),
        code(&ok)
    );
    assert!(codes.iter().all(|c| c == "4.03"), "{codes:?}");
    assert_eq!(code(&ok), "2.04");
    assert!(
        rss_after < rss_before + 4096,
        "the server loaded images it refused to serve"
    );
}

#[test]
fn replays_are_refused_before_and_after_a_restart() {
    let data = Data::new("replay");
    data.release("sensor", "1.1.0", &image(30_000, 7), true);
    let dev1 = data.provision("dev-1", "sensor");
    let mut c = client(&data, "dev-1", "sensor", Some(&dev1));
    let mut tx = [0u8; 512];
    let n = c.poll_transmit(ota_core::Instant(0), &mut tx).unwrap();
    let captured = tx[..n].to_vec();
    let mut server = Server::start(&data, &[]);
    assert_eq!(code(&exchange(&server.socket(), &captured)), "2.04");
    // The same datagram from another address (the server's retransmission cache is per peer).
    assert_eq!(code(&exchange(&server.socket(), &captured)), "4.01");
    drop(server);
    server = Server::start(&data, &[]);
    assert!(server.alive());
    assert_eq!(code(&exchange(&server.socket(), &captured)), "4.01");
    // Refused by the replay window the restarted server started from the stored floor (the
    // store's own check would say "replayed check-in or report").
    assert!(
        server.log().contains("replayed request for dev-1"),
        "{}",
        server.log()
    );
    println!("a captured check-in replayed: 4.01 on the same server and after a restart");
}

/// A block request an eavesdropper recorded, replayed after a restart: the restarted server's
/// window starts at the stored floor, which only check-ins and reports move, so the request
/// is above it. It is refused until the device's next check-in, which puts every earlier
/// sequence number below the window. (Served, it would be a reflected block of a kilobyte
/// for each small datagram.)
#[test]
fn a_block_request_replayed_after_a_restart_is_refused() {
    let data = Data::new("replay-get");
    data.release("sensor", "1.1.0", &image(30_000, 7), true);
    let dev1 = data.provision("dev-1", "sensor");
    let checkin = || {
        seal_post(
            &dev1,
            b"c",
            &raw_checkin(b"dev-1", "sensor"),
            fresh_sequence(),
        )
    };
    let mut server = Server::start(&data, &[]);
    assert_eq!(code(&exchange(&server.socket(), &checkin())), "2.04");
    let recorded = seal_get(&dev1, 1, fresh_sequence());
    assert_eq!(code(&exchange(&server.socket(), &recorded)), "2.04");
    drop(server);
    server = Server::start(&data, &[]);
    assert_eq!(code(&exchange(&server.socket(), &recorded)), "4.01");
    assert!(
        server
            .log()
            .contains("before its first check-in since the server started"),
        "{}",
        server.log()
    );
    // The device's next wake: its check-in, then its block requests, are served; the
    // recording still is not.
    assert_eq!(code(&exchange(&server.socket(), &checkin())), "2.04");
    let fresh = seal_get(&dev1, 1, fresh_sequence());
    assert_eq!(code(&exchange(&server.socket(), &fresh)), "2.04");
    assert_eq!(code(&exchange(&server.socket(), &recorded)), "4.01");
    println!("a recorded block request replayed after a restart: 4.01, before and after the device's check-in");
}

#[test]
fn a_second_serve_on_the_same_data_directory_is_refused() {
    let data = Data::new("twoserve");
    let dev1 = data.provision("dev-1", "sensor");
    let server = Server::start(&data, &[]);
    let out = Command::new(BIN)
        .args(["serve", "--coap", "127.0.0.1:0"])
        .args(["--data", data.path("data").to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a second serve started: {err}");
    assert!(
        err.contains("another ota-server serve uses") && err.contains(&server.pid().to_string()),
        "{err}"
    );
    // The first serves on.
    let mut c = client(&data, "dev-1", "sensor", Some(&dev1));
    let mut tx = [0u8; 512];
    let n = c.poll_transmit(ota_core::Instant(0), &mut tx).unwrap();
    assert_eq!(code(&exchange(&server.socket(), &tx[..n])), "2.04");
    println!(
        "a second serve on one data directory: refused ({})",
        err.trim()
    );
}

#[test]
fn a_device_provisioned_while_the_server_runs_is_served_and_no_other() {
    // The server loads devices' rows and classes when it starts; one the CLI adds later is
    // looked up when it first speaks.
    let data = Data::new("late");
    data.release("sensor", "1.1.0", &image(30_000, 5), true);
    let early = data.provision("dev-early", "sensor");
    let server = Server::start(&data, &[]);
    let late = data.provision("dev-late", "sensor");
    let mut tx = [0u8; 512];
    let mut codes = Vec::new();
    for (id, ctx) in [("dev-early", &early), ("dev-late", &late)] {
        let mut c = client(&data, id, "sensor", Some(ctx));
        let n = c.poll_transmit(ota_core::Instant(0), &mut tx).unwrap();
        codes.push(code(&exchange(&server.socket(), &tx[..n])));
    }
    // A context the server never issued, whose kid follows the two it did.
    let forged = ota_oscore::SecurityContext::derive(&[9; 16], &[1; 8], &[3], &[]).unwrap();
    let mut c = client(&data, "dev-forged", "sensor", Some(&forged));
    let n = c.poll_transmit(ota_core::Instant(0), &mut tx).unwrap();
    codes.push(code(&exchange(&server.socket(), &tx[..n])));
    println!(
        "check-ins from a device provisioned before the start, one after, one forged: {codes:?}"
    );
    assert_eq!(codes, ["2.04", "2.04", "4.01"]);
}

#[test]
fn bad_device_ids_never_reach_the_store() {
    let data = Data::new("ids");
    data.release("sensor", "1.1.0", &image(30_000, 9), true);
    // Lab mode, so the check-ins reach the handler at all.
    let server = Server::start(&data, &["--insecure-plain"]);
    let socket = server.socket();
    let long = [b'd'; 33];
    let mut codes = Vec::new();
    for (i, id) in [&b"a/b"[..], b"+", b"#", b"", &long, b"ok-id"]
        .iter()
        .enumerate()
    {
        codes.push(code(&exchange(
            &socket,
            &plain_post(b"c", &raw_checkin(id, "sensor"), i as u16),
        )));
    }
    // A payload marker with nothing after it (RFC 7252: a format error).
    let mut empty = plain_post(b"c", &[], 50);
    empty.push(0xFF);
    codes.push(code(&exchange(&socket, &empty)));
    // Rows are written behind the answers, in batches: wait (up to 5 s) for ok-id's.
    let mut status = data.status();
    for _ in 0..50 {
        if status.contains("ok-id") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        status = data.status();
    }
    println!("ids a/b + # '' 33 bytes, ok-id, empty payload: {codes:?}");
    assert_eq!(
        codes,
        ["4.00", "4.00", "4.00", "4.00", "4.00", "2.04", "4.00"]
    );
    assert_eq!(status.lines().count(), 2, "{status}");
    assert!(status.contains("ok-id"));
}

#[test]
fn a_corrupt_or_failing_release_is_halted() {
    let data = Data::new("corrupt");
    let img = image(64 * 1024, 11);
    data.release("sensor", "1.1.0", &img, true);
    let devs: Vec<_> = (1..=4)
        .map(|i| data.provision(&format!("dev-{i}"), "sensor"))
        .collect();
    // One flipped byte in the stored image.
    let db = rusqlite::Connection::open(data.db()).unwrap();
    let mut bytes: Vec<u8> = db
        .query_row("SELECT bytes FROM images", [], |r| r.get(0))
        .unwrap();
    bytes[1000] ^= 1;
    db.execute("UPDATE images SET bytes = ?1", [&bytes])
        .unwrap();
    let server = Server::start(&data, &[]);
    let socket = server.socket();
    let offered = |i: usize| {
        let mut c = client(&data, &format!("dev-{i}"), "sensor", Some(&devs[i - 1]));
        let mut r = check_in(&mut c, &socket);
        c.handle_datagram(ota_core::Instant(1), &mut r).unwrap();
        std::iter::from_fn(|| c.device_mut().poll_event())
            .any(|e| matches!(e, ota_core::Event::UpdateOffered { .. }))
    };
    assert!(!offered(1), "a corrupt image was offered");
    let status = data.status();
    assert!(
        status.contains("HALTED: stored image does not match"),
        "{status}"
    );
    assert!(server.log().contains("halted"));
    // Repaired and resumed: offered again. Then three devices report integrity failures.
    bytes[1000] ^= 1;
    db.execute("UPDATE images SET bytes = ?1", [&bytes])
        .unwrap();
    data.cli(&[
        "rollout",
        "--version",
        "1.1.0",
        "--class",
        "sensor",
        "--resume",
    ]);
    drop(server);
    let server = Server::start(&data, &[]);
    let socket = server.socket();
    let offered = |i: usize| {
        let mut c = client(&data, &format!("dev-{i}"), "sensor", Some(&devs[i - 1]));
        let mut r = check_in(&mut c, &socket);
        c.handle_datagram(ota_core::Instant(1), &mut r).unwrap();
        std::iter::from_fn(|| c.device_mut().poll_event())
            .any(|e| matches!(e, ota_core::Event::UpdateOffered { .. }))
    };
    assert!(offered(4), "not offered after repair and resume");
    for i in 1..=3 {
        let report = encode_vec(&Message::Report(Report {
            device_id: format!("dev-{i}").as_bytes(),
            image: ImageId(1),
            phase: Phase::Failed,
            result: ResultCode::INTEGRITY_FAILURE,
        }));
        assert_eq!(
            code(&exchange(
                &socket,
                &seal_post(&devs[i - 1], b"r", &report, fresh_sequence())
            )),
            "2.04"
        );
    }
    assert!(
        !offered(4),
        "offered after three integrity failures: {}\n{}",
        data.status(),
        server.log()
    );
    let status = data.status();
    println!("{status}");
    assert!(status.contains("HALTED: 3 devices reported integrity failures"));
}
