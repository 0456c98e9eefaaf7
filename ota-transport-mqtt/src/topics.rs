//! The topic layout, per device id under a configurable prefix (default `ota`).
//!
//! | topic | direction | QoS | retained | payload |
//! |---|---|---|---|---|
//! | `{prefix}/{id}/c` | device → server | 1 | no | `ota-core` `CheckIn` |
//! | `{prefix}/{id}/q` | device → server | 1 | no | `ChunkRequest` |
//! | `{prefix}/{id}/r` | device → server | 1 | no | `Report` |
//! | `{prefix}/{id}/d` | server → device | 1 | no | `CheckInReply` or `Chunk` |
//! | `{prefix}/{id}/s` | server → device | 1 | yes | desired state: the server's current `CheckInReply` for the device |
//!
//! Topic levels are one byte each because every chunk request and chunk repeats the topic.
//! Servers subscribe to `$share/{group}/{prefix}/+/c` (and `q`, `r`), so several instances
//! split one fleet's requests.

use core::fmt::Write as _;

/// What a topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Check-in, up.
    CheckIn,
    /// Chunk request, up.
    Request,
    /// Report, up.
    Report,
    /// Replies and chunks, down.
    Down,
    /// Retained desired state, down.
    Desired,
}

impl Kind {
    /// The topic's last level.
    pub const fn suffix(self) -> &'static str {
        match self {
            Kind::CheckIn => "c",
            Kind::Request => "q",
            Kind::Report => "r",
            Kind::Down => "d",
            Kind::Desired => "s",
        }
    }

    fn from_suffix(s: &str) -> Option<Self> {
        Some(match s {
            "c" => Kind::CheckIn,
            "q" => Kind::Request,
            "r" => Kind::Report,
            "d" => Kind::Down,
            "s" => Kind::Desired,
            _ => return None,
        })
    }
}

/// A topic string, bounded (no allocation).
pub type Topic = heapless::String<128>;

/// `{prefix}/{id}/{kind}`; `None` if it does not fit or the id breaks the device id rule
/// ([`ota_core::wire::check_device_id`]: nothing that is special in a topic gets through).
pub fn topic(prefix: &str, id: &str, kind: Kind) -> Option<Topic> {
    if !usable_id(id) {
        return None;
    }
    let mut t = Topic::new();
    write!(t, "{prefix}/{id}/{}", kind.suffix()).ok()?;
    Some(t)
}

/// The shared-subscription filter a server subscribes to for `kind`.
pub fn shared_filter(group: &str, prefix: &str, kind: Kind) -> Option<Topic> {
    let mut t = Topic::new();
    write!(t, "$share/{group}/{prefix}/+/{}", kind.suffix()).ok()?;
    Some(t)
}

/// Splits `{prefix}/{id}/{kind}` into the device id and the kind.
pub fn parse<'a>(prefix: &str, topic: &'a str) -> Option<(&'a str, Kind)> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix('/')?;
    let (id, suffix) = rest.rsplit_once('/')?;
    if !usable_id(id) {
        return None;
    }
    Some((id, Kind::from_suffix(suffix)?))
}

/// An id that follows the device id rule, and so is one plain topic level.
fn usable_id(id: &str) -> bool {
    ota_core::wire::check_device_id(id.as_bytes()).is_ok()
}
