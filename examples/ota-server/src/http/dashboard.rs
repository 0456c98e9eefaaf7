//! The dashboard at `/`: one server-rendered page a fleet owner reads at a glance (no
//! JavaScript, no build step; bars are styled `<div>`s, which is all a share of a fleet needs,
//! so no chart library). It reloads itself every 10 seconds.
//!
//! What it shows: versions across the fleet per class; each rollout's step, state and devices
//! by phase; failures with their reasons; devices not heard from for longer than their
//! check-in interval; image bytes sent per update.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State as Extract;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use super::State;
use crate::store::summary::Summary;

/// `s` safe inside HTML text and attributes.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const STYLE: &str = "
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f5f6f8;color:#1d2330}
header{background:#1d2330;color:#fff;padding:12px 24px;display:flex;gap:24px;align-items:baseline}
header h1{font-size:18px;margin:0}header span{opacity:.75}
main{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:16px;padding:16px 24px}
section{background:#fff;border-radius:6px;padding:12px 16px;box-shadow:0 1px 2px #0002}
h2{font-size:15px;margin:0 0 8px}table{border-collapse:collapse;width:100%}
td,th{text-align:left;padding:3px 6px;border-bottom:1px solid #eee;vertical-align:top}
th{font-weight:600;color:#555}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.bar{display:flex;height:14px;border-radius:3px;overflow:hidden;background:#eee;min-width:160px}
.bar div{height:100%}.muted{color:#777}.state{font-weight:600}
.running{color:#1a7f37}.paused{color:#b35900}.cancelled{color:#a40e26}.complete{color:#0550ae}
.legend span{display:inline-block;margin-right:10px}.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}
";

/// Colour of a phase in the bars.
fn colour(phase: &str) -> &'static str {
    match phase {
        "up to date" | "confirmed" => "#2da44e",
        "downloading" | "staged" | "trial boot" => "#218bff",
        "offered" => "#8ec5ff",
        "not in rollout yet" | "waiting for window" => "#c9ced6",
        "held: rollout paused" | "held: release halted" => "#e3a008",
        "rolled back" | "failed" | "rejected" | "refused" => "#cf222e",
        "cancelled" => "#6e7781",
        _ => "#a475f9",
    }
}

fn bar(parts: &[(String, u64)], total: u64) -> String {
    let mut o = String::from("<div class=bar>");
    for (label, n) in parts {
        let pct = if total == 0 {
            0.0
        } else {
            100.0 * *n as f64 / total as f64
        };
        let _ = write!(
            o,
            "<div style=\"width:{pct:.2}%;background:{}\" title=\"{}: {n}\"></div>",
            colour(label),
            esc(label)
        );
    }
    o.push_str("</div>");
    o
}

fn legend(parts: &[(String, u64)]) -> String {
    let mut o = String::from("<div class=legend>");
    for (label, n) in parts {
        let _ = write!(
            o,
            "<span><i style=\"background:{}\"></i>{} {n}</span>",
            colour(label),
            esc(label)
        );
    }
    o.push_str("</div>");
    o
}

/// `n` and `noun`, in the plural unless `n` is one: "1 rollout", "2 rollouts".
fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// `HH:MM:SS UTC` of Unix seconds `at`: when a summary was read (one is shown to every viewer
/// for a while, [`crate::fleet::glance`]).
fn time_of_day(at: i64) -> String {
    let s = at.rem_euclid(86_400);
    format!("{:02}:{:02}:{:02} UTC", s / 3600, s / 60 % 60, s % 60)
}

/// The page for `s`.
pub fn render(s: &Summary) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        "<!doctype html><html lang=en><head><meta charset=utf-8><meta http-equiv=refresh content=10>\
         <meta name=viewport content=\"width=device-width\"><link rel=icon href=\"data:,\"><title>ota fleet</title><style>{STYLE}</style></head><body>\
         <header><h1>ota fleet</h1><span>{}</span><span>{}</span><span>{}</span><span>{} silent</span><span class=muted>read {}</span></header><main>",
        count(s.devices, "device"),
        count(s.rollouts.len() as u64, "rollout"),
        count(s.failures.iter().map(|f| f.devices).sum::<u64>(), "failure"),
        s.silent_total,
        time_of_day(s.at)
    );

    // Rollouts.
    o.push_str("<section id=rollouts><h2>Rollouts</h2>");
    if s.rollouts.is_empty() {
        o.push_str("<p class=muted>No rollouts.</p>");
    }
    for r in &s.rollouts {
        let steps: Vec<String> = r
            .steps
            .iter()
            .enumerate()
            .map(|(i, p)| {
                if i == r.step {
                    format!("<b>{p}%</b>")
                } else {
                    format!("{p}%")
                }
            })
            .collect();
        let _ = write!(
            o,
            "<h3>{} → {} <span class=\"state {}\">{}</span></h3><p>steps {} · offered to {}% · {} of {} devices on {}{}{}</p>{}{}",
            esc(&r.class),
            esc(&r.version),
            esc(&r.state),
            esc(&r.state),
            steps.join(" → "),
            r.percent,
            r.updated,
            r.devices,
            esc(&r.version),
            if r.reason.is_empty() {
                String::new()
            } else {
                format!(" · <span class=paused>{}</span>", esc(&r.reason))
            },
            r.halted
                .as_ref()
                .map(|h| format!(" · <span class=cancelled>release halted: {}</span>", esc(h)))
                .unwrap_or_default(),
            bar(&r.phases, r.devices),
            legend(&r.phases)
        );
    }
    o.push_str("</section>");

    // Versions.
    o.push_str("<section id=versions><h2>Versions across the fleet</h2><table><tr><th>class</th><th>version</th><th class=n>devices</th><th></th></tr>");
    for v in &s.versions {
        let class_total: u64 = s
            .versions
            .iter()
            .filter(|x| x.class == v.class)
            .map(|x| x.devices)
            .sum();
        let pct = 100.0 * v.devices as f64 / class_total.max(1) as f64;
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td class=n>{}</td><td><div class=bar><div style=\"width:{pct:.1}%;background:#218bff\"></div></div></td></tr>",
            esc(&v.class),
            esc(&v.version),
            v.devices
        );
    }
    o.push_str("</table></section>");

    // Failures.
    o.push_str("<section id=failures><h2>Failures</h2>");
    if s.failures.is_empty() {
        o.push_str("<p class=muted>None.</p>");
    } else {
        o.push_str("<table><tr><th>result</th><th>reason</th><th class=n>devices</th><th>for example</th></tr>");
        for f in &s.failures {
            let _ = write!(
                o,
                "<tr><td class=cancelled>{}</td><td>{}</td><td class=n>{}</td><td class=muted>{}</td></tr>",
                esc(&f.result),
                esc(&f.reason),
                f.devices,
                esc(&f.examples.join(", "))
            );
        }
        o.push_str("</table>");
    }
    o.push_str("</section>");

    // Silent devices.
    let _ = write!(
        o,
        "<section id=silent><h2>Not seen for longer than their check-in interval ({})</h2>",
        s.silent_total
    );
    if s.silent.is_empty() {
        o.push_str("<p class=muted>Every device checked in on time.</p>");
    } else {
        o.push_str("<table><tr><th>device</th><th>class</th><th>running</th><th class=n>silent</th><th class=n>interval</th></tr>");
        for d in &s.silent {
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=n>{} s</td><td class=n>{} s</td></tr>",
                esc(&d.id),
                esc(&d.class),
                esc(&d.running),
                d.silent_secs,
                d.interval_secs
            );
        }
        o.push_str("</table>");
    }
    o.push_str("</section>");

    // Bytes per update.
    o.push_str("<section id=bytes><h2>Bytes per update</h2>");
    if s.bytes.is_empty() {
        o.push_str("<p class=muted>No image bytes sent yet.</p>");
    } else {
        o.push_str("<table><tr><th>release</th><th class=n>image</th><th class=n>devices</th><th class=n>sent</th><th class=n>of which patch</th><th class=n>confirmed</th><th class=n>per confirmed device</th></tr>");
        for b in &s.bytes {
            let ratio = if b.image_bytes == 0 || b.confirmed == 0 {
                String::new()
            } else {
                format!(
                    " ({:.2}×)",
                    b.bytes_per_confirmed as f64 / f64::from(b.image_bytes)
                )
            };
            let _ = write!(
                o,
                "<tr><td>{} {}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}{}</td></tr>",
                esc(&b.class),
                esc(&b.version),
                b.image_bytes,
                b.devices,
                b.bytes_sent,
                b.patch_bytes,
                b.confirmed,
                b.bytes_per_confirmed,
                ratio
            );
        }
        o.push_str("</table>");
    }
    o.push_str("</section></main></body></html>\n");
    o
}

/// `GET /`.
pub async fn page(Extract(s): Extract<Arc<State>>) -> Response {
    match s.fleet.summary().await {
        Ok(summary) => Html(render(&summary)).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Html(format!(
                "<!doctype html><title>ota fleet</title><p>{}</p>",
                esc(&format!("{e:#}"))
            )),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_a_summary_was_read() {
        assert_eq!(time_of_day(0), "00:00:00 UTC");
        assert_eq!(time_of_day(86_400 + 3600 * 13 + 60 * 7 + 9), "13:07:09 UTC");
    }

    #[test]
    fn text_from_devices_is_escaped() {
        assert_eq!(
            esc("<script>\"x\"&'"),
            "&lt;script&gt;&quot;x&quot;&amp;&#39;"
        );
    }
}
