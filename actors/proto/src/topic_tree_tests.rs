//! Unit and property tests for the topic tree, checked against `TopicFilter::matches`.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;
use crate::topic::{TopicFilter, TopicName};

fn matches(tree: &TopicTree<String>, filter: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    tree.for_each_match(filter, |v| {
        assert!(seen.insert(v.clone()), "{v} reported twice");
    });
    seen
}

fn tree(topics: &[&str]) -> TopicTree<String> {
    let mut t = TopicTree::new();
    for topic in topics {
        t.insert(topic, (*topic).to_owned());
    }
    t
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn literal_plus_and_hash_filters_find_their_topics() {
    let t = tree(&["a", "a/b", "a/c", "a/b/c", "x/b", "/lead", "a//b"]);
    assert_eq!(matches(&t, "a/b"), set(&["a/b"]));
    assert_eq!(matches(&t, "a/+"), set(&["a/b", "a/c"]));
    assert_eq!(matches(&t, "+/b"), set(&["a/b", "x/b"]));
    assert_eq!(
        matches(&t, "a/#"),
        set(&["a", "a/b", "a/c", "a/b/c", "a//b"])
    );
    assert_eq!(matches(&t, "+/+/c"), set(&["a/b/c"]));
    assert_eq!(matches(&t, "+/lead"), set(&["/lead"]));
    assert_eq!(matches(&t, "a/+/b"), set(&["a//b"]));
    assert_eq!(matches(&t, "#").len(), 7);
    assert_eq!(matches(&t, "nothing/#"), set(&[]));
}

/// [MQTT-4.7.2-1] Filters starting with a wildcard do not match topics starting with `$`.
#[test]
fn wildcards_at_the_first_level_skip_dollar_topics() {
    let t = tree(&["$SYS/uptime", "$SYS/a/b", "normal/x"]);
    assert_eq!(matches(&t, "#"), set(&["normal/x"]));
    assert_eq!(matches(&t, "+/uptime"), set(&[]));
    assert_eq!(matches(&t, "$SYS/#"), set(&["$SYS/uptime", "$SYS/a/b"]));
    assert_eq!(matches(&t, "$SYS/+"), set(&["$SYS/uptime"]));
}

#[test]
fn insert_replaces_and_remove_prunes() {
    let mut t = tree(&["a/b/c", "a/b"]);
    assert_eq!(t.insert("a/b", "new".to_owned()), Some("a/b".to_owned()));
    assert_eq!(t.len(), 2);
    assert_eq!(t.remove("a/b/c"), Some("a/b/c".to_owned()));
    assert_eq!(t.remove("a/b/c"), None);
    assert_eq!(t.get("a/b").map(String::as_str), Some("new"));
    assert_eq!(t.remove("a/b"), Some("new".to_owned()));
    assert!(t.is_empty());
    assert!(t.root.children.is_empty(), "emptied branches are pruned");
    assert_eq!(t.remove("never/there"), None);
}

#[test]
fn retain_drops_values_and_prunes_emptied_branches() {
    let mut t = tree(&["a/b/c", "a/b", "a/x", "keep/me", "gone/deep/down"]);
    t.retain(|v| v.starts_with("keep") || v == "a/b");
    assert_eq!(t.len(), 2);
    assert_eq!(matches(&t, "#"), set(&["a/b", "keep/me"]));
    assert!(!t.root.children.contains_key("gone"));
    let a = t.root.children.get("a").unwrap();
    assert!(!a.children.contains_key("x"));
    assert!(a.children.get("b").unwrap().children.is_empty());
}

/// Topics deeper than `TREE_LEVELS` are kept whole beside the tree (one node per level would
/// make a 65 000-level topic cost megabytes) and behave exactly like the others.
#[test]
fn deep_topics_are_kept_beside_the_tree_and_behave_the_same() {
    let at_limit = vec!["d"; TREE_LEVELS].join("/");
    let over = vec!["d"; TREE_LEVELS + 1].join("/");
    let mut t = tree(&[at_limit.as_str(), over.as_str(), "d"]);
    assert_eq!(t.len(), 3);
    assert_eq!(
        t.deep.len(),
        1,
        "only the topic over the limit is beside the tree"
    );
    assert_eq!(matches(&t, "#").len(), 3);
    assert_eq!(matches(&t, "d/#").len(), 3);
    assert_eq!(matches(&t, "+/#").len(), 3);
    assert_eq!(matches(&t, &over), set(&[over.as_str()]));
    assert_eq!(matches(&t, "$SYS/#").len(), 0);
    assert_eq!(t.get(&over), Some(&over));
    assert_eq!(t.insert(&over, "again".to_owned()), Some(over.clone()));
    assert_eq!(t.len(), 3);
    t.retain(|v| v != "again");
    assert_eq!(t.len(), 2);
    assert!(t.deep.is_empty());
    t.insert(&over, over.clone());
    assert_eq!(t.remove(&over), Some(over.clone()));
    assert_eq!(t.len(), 2);
    assert!(format!("{t:?}").contains("len: 2"));
}

#[test]
fn retain_that_keeps_everything_changes_nothing() {
    let mut t = tree(&["a/b", "a/c", "x"]);
    t.retain(|_| true);
    assert_eq!(t.len(), 3);
    assert_eq!(matches(&t, "#"), set(&["a/b", "a/c", "x"]));
}

/// Topics are client-controlled: one with 100 000 levels is stored, matched, removed and
/// dropped without recursion.
#[test]
fn very_deep_topics_do_not_overflow_the_stack() {
    let deep = vec!["l"; 100_000].join("/");
    let mut t = TopicTree::new();
    t.insert(&deep, deep.clone());
    t.insert("l", "l".to_owned());
    assert_eq!(matches(&t, "#").len(), 2);
    assert_eq!(matches(&t, &deep).len(), 1);
    let plus_deep = vec!["+"; 100_000].join("/");
    assert_eq!(matches(&t, &plus_deep).len(), 1);
    t.retain(|v| v.len() > 1);
    assert_eq!(t.len(), 1);
    assert_eq!(t.remove(&deep).map(|v| v.len()), Some(deep.len()));
    t.insert(&deep, deep.clone());
    drop(t);
}

fn level() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("a".to_owned()),
        Just("b".to_owned()),
        Just("$s".to_owned()),
        "[a-c]{1,2}",
    ]
}

fn topic() -> impl Strategy<Value = String> {
    prop::collection::vec(level(), 1..5).prop_map(|levels| levels.join("/"))
}

fn filter() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop_oneof![level(), Just("+".to_owned())], 1..5),
        any::<bool>(),
    )
        .prop_map(|(mut levels, hash)| {
            if hash {
                levels.push("#".to_owned());
            }
            levels.join("/")
        })
}

proptest! {
    /// The tree finds exactly the topics a linear scan with `TopicFilter::matches` finds, and
    /// stays consistent through removals and `retain`.
    #[test]
    fn matching_agrees_with_a_linear_scan(
        topics in prop::collection::vec(topic(), 0..40),
        removed in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
        drop_odd in any::<bool>(),
        filters in prop::collection::vec(filter(), 1..10),
    ) {
        let mut t = TopicTree::new();
        let mut held = BTreeMap::new();
        // Only valid topic names are ever stored (a topic is at least one character).
        let topics: Vec<String> = topics.into_iter().filter(|t| TopicName::new(t.as_str()).is_ok()).collect();
        for topic in &topics {
            t.insert(topic, topic.clone());
            held.insert(topic.clone(), ());
        }
        for index in removed {
            if topics.is_empty() {
                break;
            }
            let topic = index.get(&topics);
            prop_assert_eq!(t.remove(topic).is_some(), held.remove(topic).is_some());
        }
        if drop_odd {
            t.retain(|v| v.len() % 2 == 0);
            held.retain(|k, _| k.len() % 2 == 0);
        }
        prop_assert_eq!(t.len(), held.len());
        for filter in filters {
            let Ok(parsed) = TopicFilter::new(&filter) else { continue };
            let expected: BTreeSet<String> = held
                .keys()
                .filter(|topic| TopicName::new(topic.as_str()).is_ok_and(|name| parsed.matches(&name)))
                .cloned()
                .collect();
            prop_assert_eq!(matches(&t, &filter), expected, "filter {}", filter);
        }
    }
}
