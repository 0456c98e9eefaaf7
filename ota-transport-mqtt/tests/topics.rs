//! The topic layout: every topic made for a usable id parses back to that id and kind, and ids
//! that would change the topic's structure are refused.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use ota_transport_mqtt::topics::{parse, shared_filter, topic, Kind};
use proptest::prelude::*;

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::CheckIn),
        Just(Kind::Request),
        Just(Kind::Report),
        Just(Kind::Down),
        Just(Kind::Desired),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn topics_roundtrip(prefix in "[a-z]{1,8}(/[a-z0-9]{1,8}){0,2}", id in "[^/+#\u{0}]{1,40}", k in kind()) {
        match topic(&prefix, &id, k) {
            Some(t) => prop_assert_eq!(parse(&prefix, &t), Some((id.as_str(), k))),
            // Only a topic longer than the bound is refused.
            None => prop_assert!(prefix.len() + id.len() + 4 > 128),
        }
    }

    #[test]
    fn ids_that_break_the_structure_are_refused(a in "[a-z]{0,5}", bad in "[/+#\u{0}]", b in "[a-z]{0,5}", k in kind()) {
        prop_assert_eq!(topic("ota", &format!("{a}{bad}{b}"), k), None);
    }

    #[test]
    fn parse_never_panics_and_only_accepts_our_shape(
        t in prop_oneof!["\\PC{0,60}", "ota/\\PC{0,40}", "ota/[a-z+#/]{0,6}/[a-z]{0,2}"]
    ) {
        if let Some((id, k)) = parse("ota", &t) {
            let again = topic("ota", id, k);
            prop_assert_eq!(again.as_deref(), Some(t.as_str()));
        }
    }
}

#[test]
fn shared_filters_name_the_group_and_every_device() {
    assert_eq!(
        shared_filter("srv", "ota", Kind::Request).unwrap().as_str(),
        "$share/srv/ota/+/q"
    );
    assert_eq!(topic("ota", "", Kind::Down), None);
}
