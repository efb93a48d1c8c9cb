//! Unit tests for topic name / filter validation and matching ([MQTT-4.7]).

#![allow(clippy::unwrap_used)]

use super::*;

fn name(s: &str) -> TopicName {
    TopicName::new(s).unwrap()
}

fn filter(s: &str) -> TopicFilter {
    TopicFilter::new(s).unwrap()
}

#[test]
fn topic_names_are_validated() {
    assert_eq!(TopicName::new(""), Err(TopicError::Empty));
    assert_eq!(TopicName::new("a/+"), Err(TopicError::WildcardInName));
    assert_eq!(TopicName::new("a#"), Err(TopicError::WildcardInName));
    assert_eq!(TopicName::new("a\0b"), Err(TopicError::NullCharacter));
    let long = "a".repeat(65_536);
    assert_eq!(TopicName::new(&long), Err(TopicError::TooLong(65_536)));
    assert!(TopicName::new(&long[1..]).is_ok());
    for ok in ["a", "/", "a//b", "$SYS/x", " ", "é/ü"] {
        assert_eq!(name(ok).as_str(), ok);
    }
}

#[test]
fn topic_name_accessors() {
    let t = name("$SYS/broker//load");
    assert!(t.is_system());
    assert!(!t.is_empty());
    assert_eq!(
        t.levels().collect::<Vec<_>>(),
        ["$SYS", "broker", "", "load"]
    );
    assert_eq!(t.to_string(), "$SYS/broker//load");
    assert_eq!(format!("{t:?}"), "\"$SYS/broker//load\"");
    assert!(TopicName::empty().is_empty());
    assert!(!name("a").is_system());
    let mut set = std::collections::HashSet::new();
    set.insert(name("x/y"));
    assert!(set.contains("x/y"));
}

#[test]
fn topic_filters_are_validated() {
    for ok in [
        "#",
        "+",
        "a/#",
        "a/+/b",
        "+/+",
        "/",
        "a//b",
        "$SYS/#",
        "sport/+/player1",
        "$share",
        "$sharex/a",
    ] {
        assert_eq!(filter(ok).as_str(), ok);
        assert_eq!(filter(ok).shared_group(), None);
        assert_eq!(filter(ok).matching_filter(), ok);
    }
    assert_eq!(TopicFilter::new(""), Err(TopicError::Empty));
    assert_eq!(TopicFilter::new("a\0"), Err(TopicError::NullCharacter));
    for bad in ["a/#/b", "a#", "#a", "a/b#", "a+", "+a/b", "a/++", "##"] {
        assert_eq!(
            TopicFilter::new(bad),
            Err(TopicError::MisplacedWildcard),
            "{bad}"
        );
    }
}

#[test]
fn shared_filters_split_group_and_filter() {
    let f = filter("$share/group1/sport/+/score");
    assert_eq!(f.shared_group(), Some("group1"));
    assert_eq!(f.matching_filter(), "sport/+/score");
    assert!(f.has_wildcards());
    assert!(f.matches(&name("sport/tennis/score")));
    let g = filter("$share/g/#");
    assert_eq!(g.shared_group(), Some("g"));
    assert_eq!(g.matching_filter(), "#");
    assert_eq!(
        TopicFilter::new("$share/grp"),
        Err(TopicError::MissingSharedFilter)
    );
    assert_eq!(
        TopicFilter::new("$share/grp/"),
        Err(TopicError::MissingSharedFilter)
    );
    assert_eq!(
        TopicFilter::new("$share//a"),
        Err(TopicError::InvalidShareGroup)
    );
    assert_eq!(
        TopicFilter::new("$share/"),
        Err(TopicError::InvalidShareGroup)
    );
    assert_eq!(
        TopicFilter::new("$share/a+/x"),
        Err(TopicError::InvalidShareGroup)
    );
    assert_eq!(
        TopicFilter::new("$share/#"),
        Err(TopicError::InvalidShareGroup)
    );
    assert_eq!(
        TopicFilter::new("$share/g/a/#/b"),
        Err(TopicError::MisplacedWildcard)
    );
}

#[test]
fn matching_follows_the_specification_examples() {
    // [MQTT-4.7.1]: "sport/tennis/player1/#".
    let f = filter("sport/tennis/player1/#");
    assert!(f.matches(&name("sport/tennis/player1")));
    assert!(f.matches(&name("sport/tennis/player1/ranking")));
    assert!(f.matches(&name("sport/tennis/player1/score/wimbledon")));
    assert!(!f.matches(&name("sport/tennis/player2")));
    let f = filter("sport/#");
    assert!(f.matches(&name("sport")));
    // "+" matches one level, empty ones too.
    let f = filter("sport/tennis/+");
    assert!(f.matches(&name("sport/tennis/player1")));
    assert!(!f.matches(&name("sport/tennis/player1/ranking")));
    assert!(!filter("sport/+").matches(&name("sport")));
    assert!(filter("sport/+").matches(&name("sport/")));
    assert!(filter("+/+").matches(&name("/finance")));
    assert!(filter("/+").matches(&name("/finance")));
    assert!(!filter("+").matches(&name("/finance")));
    assert!(filter("#").matches(&name("/")));
    assert!(filter("a//b").matches(&name("a//b")));
    assert!(!filter("a/b").matches(&name("a/b/c")));
    assert!(!filter("a/b/c").matches(&name("a/b")));
}

#[test]
fn dollar_topics_are_not_matched_by_leading_wildcards() {
    // [MQTT-4.7.2-1]
    assert!(!filter("#").matches(&name("$SYS/x")));
    assert!(!filter("+/monitor/Clients").matches(&name("$SYS/monitor/Clients")));
    assert!(filter("$SYS/#").matches(&name("$SYS/monitor/Clients")));
    assert!(filter("$SYS/monitor/+").matches(&name("$SYS/monitor/Clients")));
    assert!(!filter("$share/g/#").matches(&name("$SYS/x")));
    assert!(filter("a/+").matches(&name("a/$x")));
}

#[test]
fn empty_placeholder_matches_nothing() {
    assert!(!filter("#").matches(&TopicName::empty()));
}

#[test]
fn filters_compare_and_hash_as_strings() {
    let mut set = std::collections::HashSet::new();
    set.insert(filter("$share/g/a"));
    assert!(set.contains("$share/g/a"));
    assert_eq!(filter("a/+"), filter("a/+"));
    assert_ne!(filter("$share/g/a"), filter("a"));
    assert_eq!(format!("{:?}", filter("a/#")), "\"a/#\"");
    assert!(!filter("a/b").has_wildcards());
}

#[test]
fn parse_with_from_str() {
    let t: TopicName = "a/b".parse().unwrap();
    assert_eq!(t, name("a/b"));
    let f: TopicFilter = "$share/g/+".parse().unwrap();
    assert_eq!(f.shared_group(), Some("g"));
    assert!("a/#/b".parse::<TopicFilter>().is_err());
}
