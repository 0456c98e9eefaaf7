//! Our device client against our server over loopback UDP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::*;
use ota_core::wire::WakeBudget;

#[test]
fn full_update_in_one_wake() {
    let img = image(100_000, 1);
    let server = start_server(handler(&img, 1024));
    let (staged, wakes, radio) = download(server.addr, img.len(), 8, WakeBudget::default());
    assert_eq!(staged, img);
    assert_eq!(wakes, 1);
    let ratio = radio as f64 / img.len() as f64;
    assert!(ratio < 1.06, "radio bytes / image bytes = {ratio}");
}

#[test]
fn resumes_across_short_wakes_without_refetch() {
    let img = image(40_000, 2);
    let server = start_server(handler(&img, 512));
    let budget = WakeBudget {
        bytes: Some(6_000),
        millis: None,
    };
    let (staged, wakes, _) = download(server.addr, img.len(), 4, budget);
    assert_eq!(staged, img);
    assert!(
        wakes >= 7,
        "a 6000-byte budget cannot fetch 40 kB in fewer wakes ({wakes})"
    );
    // Loopback loses nothing, so every block is fetched exactly once across all the wakes.
    let blocks = server
        .stats
        .blocks
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(blocks, img.len().div_ceil(512) as u64);
}
