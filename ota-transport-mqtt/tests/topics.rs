//! The topic layout: every topic made for an id that follows the device id rule parses back to
//! that id and kind, and every other id is refused (those that would change the topic's
//! structure among them).
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
    fn topics_roundtrip(prefix in "[a-z]{1,8}(/[a-z0-9]{1,8}){0,2}", id in "[A-Za-z0-9._:-]{1,32}", k in kind()) {
        let t = topic(&prefix, &id, k).unwrap();
        prop_assert_eq!(parse(&prefix, &t), Some((id.as_str(), k)));
    }

    /// Any id at all: a topic exactly when the id follows the rule.
    #[test]
    fn topics_follow_the_device_id_rule(id in "\\PC{0,40}", k in kind()) {
        let ok = ota_core::wire::check_device_id(id.as_bytes()).is_ok();
        prop_assert_eq!(topic("ota", &id, k).is_some(), ok);
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
