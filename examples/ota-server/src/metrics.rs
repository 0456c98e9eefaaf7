//! The server's counters, shown at `/metrics` in the Prometheus text format with the CoAP
//! transport's own (datagrams, bytes, latency histogram).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use ota_transport_coap::server::ServerStats;

/// Fleet-level counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Check-ins decided.
    pub checkins: AtomicU64,
    /// Of which answered with an offer.
    pub offers: AtomicU64,
    /// Deferred (rollout not reached, window, halted).
    pub deferrals: AtomicU64,
    /// Reports received.
    pub reports: AtomicU64,
    /// Image bytes sent (CoAP blocks and MQTT chunks).
    pub image_bytes: AtomicU64,
    /// Outcomes devices reported, by result and reason.
    pub results: Mutex<BTreeMap<(String, String), u64>>,
    /// Rollouts paused automatically.
    pub auto_pauses: AtomicU64,
}

impl Metrics {
    /// Counts an outcome.
    pub fn result(&self, result: &str, reason: &str) {
        if let Ok(mut m) = self.results.lock() {
            *m.entry((result.to_string(), reason.to_string()))
                .or_insert(0) += 1;
        }
    }

    /// The Prometheus text exposition of these counters and, if given, the CoAP server's.
    pub fn render(&self, coap: Option<&ServerStats>) -> String {
        let mut o = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        counter(
            "ota_checkins_total",
            "Check-ins decided.",
            g(&self.checkins),
        );
        counter(
            "ota_offers_total",
            "Check-ins answered with an update offer.",
            g(&self.offers),
        );
        counter(
            "ota_deferrals_total",
            "Check-ins deferred.",
            g(&self.deferrals),
        );
        counter("ota_reports_total", "Reports received.", g(&self.reports));
        counter(
            "ota_image_bytes_sent_total",
            "Image bytes sent to devices.",
            g(&self.image_bytes),
        );
        counter(
            "ota_rollouts_auto_paused_total",
            "Rollouts paused by their failure threshold.",
            g(&self.auto_pauses),
        );
        if let Some(s) = coap {
            counter(
                "ota_coap_datagrams_received_total",
                "CoAP datagrams received.",
                g(&s.datagrams_in),
            );
            counter(
                "ota_coap_datagrams_sent_total",
                "CoAP datagrams sent.",
                g(&s.datagrams_out),
            );
            counter(
                "ota_coap_bytes_received_total",
                "CoAP bytes received.",
                g(&s.bytes_in),
            );
            counter(
                "ota_coap_bytes_sent_total",
                "CoAP bytes sent.",
                g(&s.bytes_out),
            );
            counter(
                "ota_coap_blocks_total",
                "Image blocks served over CoAP.",
                g(&s.blocks),
            );
            counter(
                "ota_coap_refused_unauthenticated_total",
                "Requests refused 4.01.",
                g(&s.unauthenticated),
            );
            counter(
                "ota_coap_refused_forbidden_total",
                "Requests refused 4.03.",
                g(&s.forbidden),
            );
            counter(
                "ota_coap_replays_total",
                "Replayed requests refused.",
                g(&s.replays),
            );
            counter(
                "ota_coap_duplicates_total",
                "Retransmissions answered from the cache.",
                g(&s.duplicates),
            );
            counter(
                "ota_coap_copies_total",
                "Requests a device sent twice back to back whose second copy was dropped.",
                g(&s.copies),
            );
            let (buckets, count, sum) = s.latency.snapshot();
            let _ = writeln!(o, "# HELP ota_request_duration_seconds Time from a CoAP datagram's arrival to its answer.\n# TYPE ota_request_duration_seconds histogram");
            for (le, n) in buckets {
                let _ = writeln!(o, "ota_request_duration_seconds_bucket{{le=\"{le}\"}} {n}");
            }
            let _ = writeln!(
                o,
                "ota_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(o, "ota_request_duration_seconds_sum {sum}");
            let _ = writeln!(o, "ota_request_duration_seconds_count {count}");
        }
        let _ = writeln!(o, "# HELP ota_results_total Update outcomes devices reported, by result and reason.\n# TYPE ota_results_total counter");
        if let Ok(m) = self.results.lock() {
            for ((result, reason), n) in m.iter() {
                let _ = writeln!(
                    o,
                    "ota_results_total{{result=\"{}\",reason=\"{}\"}} {n}",
                    escape(result),
                    escape(reason)
                );
            }
        }
        o
    }
}

/// A label value escaped for the text format.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
