//! Unit and property tests for the subscription trie, checked against `TopicFilter::matches`.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashMap};

use proptest::prelude::*;

use super::*;
use crate::topic::{TopicFilter, TopicName};

fn matches(trie: &Trie<u32, &'static str>, topic: &str) -> BTreeSet<(u32, &'static str)> {
    let mut seen = BTreeSet::new();
    trie.for_each_match(topic, |k, v| {
        assert!(seen.insert((*k, *v)), "({k}, {v}) reported twice");
    });
    seen
}

fn set(items: &[(u32, &'static str)]) -> BTreeSet<(u32, &'static str)> {
    items.iter().copied().collect()
}

#[test]
fn exact_plus_and_hash_filters_match() {
    let mut t = Trie::new();
    t.insert("a/b", 1, "a/b");
    t.insert("a/+", 2, "a/+");
    t.insert("a/#", 3, "a/#");
    t.insert("#", 4, "#");
    t.insert("+/b", 5, "+/b");
    t.insert("a/b/c", 6, "a/b/c");
    assert_eq!(t.len(), 6);
    assert_eq!(
        matches(&t, "a/b"),
        set(&[(1, "a/b"), (2, "a/+"), (3, "a/#"), (4, "#"), (5, "+/b")])
    );
    assert_eq!(matches(&t, "a"), set(&[(3, "a/#"), (4, "#")]));
    assert_eq!(matches(&t, "a/"), set(&[(2, "a/+"), (3, "a/#"), (4, "#")]));
    assert_eq!(
        matches(&t, "a/b/c"),
        set(&[(3, "a/#"), (4, "#"), (6, "a/b/c")])
    );
    assert_eq!(matches(&t, "x"), set(&[(4, "#")]));
}

#[test]
fn dollar_topics_skip_leading_wildcards() {
    let mut t = Trie::new();
    t.insert("#", 1, "#");
    t.insert("+/x", 2, "+/x");
    t.insert("$SYS/#", 3, "$SYS/#");
    t.insert("$SYS/+", 4, "$SYS/+");
    assert_eq!(matches(&t, "$SYS/x"), set(&[(3, "$SYS/#"), (4, "$SYS/+")]));
    assert_eq!(matches(&t, "SYS/x"), set(&[(1, "#"), (2, "+/x")]));
}

#[test]
fn insert_replaces_and_remove_prunes() {
    let mut t = Trie::new();
    assert!(t.is_empty());
    assert_eq!(t.insert("a/b/c/d", 1, "one"), None);
    assert_eq!(t.insert("a/b/c/d", 1, "uno"), Some("one"));
    assert_eq!(t.get("a/b/c/d", &1), Some(&"uno"));
    assert_eq!(t.insert("a/b/c/d", 2, "two"), None);
    assert_eq!(t.insert("a/#", 1, "hash"), None);
    assert_eq!(t.len(), 3);
    assert_eq!(t.remove("a/b/c/d", &3), None);
    assert_eq!(t.remove("a/b/c", &1), None);
    assert_eq!(t.remove("a/b/c/d", &1), Some("uno"));
    assert_eq!(t.remove("a/b/c/d", &1), None);
    assert_eq!(t.remove("a/b/c/d", &2), Some("two"));
    // The chain b/c/d is gone; `a` stays for its `#` subscriber.
    let a = t.root.children.get("a").unwrap();
    assert!(a.children.is_empty());
    assert_eq!(t.remove("a/#", &1), Some("hash"));
    assert!(t.root.children.is_empty());
    assert!(t.is_empty());
}

#[test]
fn remove_keeps_branches_other_filters_need() {
    let mut t = Trie::new();
    t.insert("a/+/c", 1, "x");
    t.insert("a/+", 2, "y");
    t.insert("+/+/+", 3, "z");
    assert_eq!(t.remove("a/+/c", &1), Some("x"));
    assert_eq!(matches(&t, "a/b"), set(&[(2, "y")]));
    assert_eq!(matches(&t, "a/b/c"), set(&[(3, "z")]));
    assert_eq!(t.remove("+/+/+", &3), Some("z"));
    assert!(t.root.plus.is_none());
    assert_eq!(t.remove("a/+", &2), Some("y"));
    assert!(t.root.children.is_empty());
    assert_eq!(t.len(), 0);
}

#[test]
fn root_hash_and_empty_levels() {
    let mut t = Trie::new();
    t.insert("#", 1, "#");
    t.insert("/", 2, "/");
    t.insert("+/", 3, "+/");
    assert_eq!(matches(&t, "/"), set(&[(1, "#"), (2, "/"), (3, "+/")]));
    assert_eq!(t.remove("#", &1), Some("#"));
    assert_eq!(matches(&t, "/"), set(&[(2, "/"), (3, "+/")]));
}

#[test]
fn very_deep_filters_neither_overflow_nor_leak() {
    // 30 000 levels: matching, removal and drop must not recurse per level.
    let deep = vec!["+"; 30_000].join("/");
    let topic = vec!["x"; 30_000].join("/");
    let mut t = Trie::new();
    t.insert(&deep, 1, "deep");
    let deep_a = vec!["x"; 30_000].join("/");
    t.insert(&deep_a, 2, "exact");
    assert_eq!(matches(&t, &topic), set(&[(1, "deep"), (2, "exact")]));
    assert_eq!(t.remove(&deep, &1), Some("deep"));
    assert!(t.root.plus.is_none());
    drop(t);
}

/// A level drawn from a small alphabet so random filters and topics often collide.
fn level() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("a"),
        Just("b"),
        Just("$x"),
        Just(""),
        Just("+"),
        Just("#")
    ]
}

fn filter_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(level(), 1..5)
        .prop_map(|levels| levels.join("/"))
        .prop_filter("valid filters only", |f| TopicFilter::new(f).is_ok())
}

fn topic_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![Just("a"), Just("b"), Just("$x"), Just("")],
        1..5,
    )
    .prop_map(|levels| levels.join("/"))
    .prop_filter("topic names are not empty", |t| !t.is_empty())
}

proptest! {
    #[test]
    fn trie_agrees_with_brute_force_matching(
        entries in prop::collection::vec((filter_strategy(), 0u8..4), 0..24),
        removals in prop::collection::vec((filter_strategy(), 0u8..4), 0..12),
        topics in prop::collection::vec(topic_strategy(), 1..12),
    ) {
        let mut trie: Trie<u8, String> = Trie::new();
        let mut model: HashMap<(String, u8), String> = HashMap::new();
        for (filter, key) in &entries {
            let old = trie.insert(filter, *key, filter.clone());
            prop_assert_eq!(old, model.insert((filter.clone(), *key), filter.clone()));
        }
        // Remove some inserted entries and some random ones.
        for (filter, key) in entries.iter().step_by(3).chain(removals.iter()) {
            let removed = trie.remove(filter, key);
            prop_assert_eq!(removed, model.remove(&(filter.clone(), *key)));
        }
        prop_assert_eq!(trie.len(), model.len());
        for topic in &topics {
            let name = TopicName::new(topic).unwrap();
            let mut got = BTreeSet::new();
            trie.for_each_match(topic, |k, v| {
                assert!(got.insert((v.clone(), *k)), "reported twice");
            });
            let want: BTreeSet<(String, u8)> = model
                .keys()
                .filter(|(f, _)| TopicFilter::new(f).unwrap().matches(&name))
                .map(|(f, k)| (f.clone(), *k))
                .collect();
            prop_assert_eq!(got, want, "topic {:?}", topic);
        }
        // Everything removed: the trie prunes back to an empty root.
        for (filter, key) in model.keys() {
            prop_assert!(trie.remove(filter, key).is_some());
        }
        prop_assert!(trie.is_empty());
        prop_assert!(trie.root.children.is_empty() && trie.root.plus.is_none());
        prop_assert!(trie.root.exact.is_empty() && trie.root.multi.is_empty());
    }
}
