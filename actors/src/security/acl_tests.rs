//! Tests for the `acl` module.

#![allow(clippy::unwrap_used)]

use super::*;

fn acl(text: &str) -> Acl {
    Acl::parse(text, "acl").unwrap()
}

const ANON: Option<&str> = None;

#[test]
fn topic_lines_before_the_first_user_are_for_anonymous_clients() {
    let acl = acl("# anonymous\ntopic public/#\nuser alice\ntopic alice/#\n");
    assert!(acl.can_publish(ANON, "c1", "public/news"));
    assert!(acl.can_subscribe(ANON, "c1", "public/#"));
    assert!(!acl.can_publish(ANON, "c1", "alice/x"));
    // A user does not inherit the anonymous rules.
    assert!(!acl.can_publish(Some("alice"), "c1", "public/news"));
    assert!(acl.can_publish(Some("alice"), "c1", "alice/x"));
}

#[test]
fn per_user_rules_apply_to_that_user_only() {
    let acl = acl("user alice\ntopic a/#\nuser bob smith\ntopic b/#\nuser alice\ntopic c\n");
    assert!(acl.can_publish(Some("alice"), "c", "a/1"));
    assert!(acl.can_publish(Some("alice"), "c", "c"));
    assert!(!acl.can_publish(Some("alice"), "c", "b/1"));
    assert!(acl.can_publish(Some("bob smith"), "c", "b/1"));
    assert!(!acl.can_publish(Some("bob smith"), "c", "a/1"));
    assert!(!acl.can_publish(Some("carol"), "c", "a/1"));
}

#[test]
fn read_write_and_readwrite() {
    let acl = acl("topic read r/#\ntopic write w/#\ntopic readwrite rw/#\ntopic both/#\n");
    for (topic, read, write) in [
        ("r/1", true, false),
        ("w/1", false, true),
        ("rw/1", true, true),
        ("both/1", true, true),
    ] {
        assert_eq!(acl.can_receive(ANON, "c", topic), read, "{topic}");
        assert_eq!(acl.can_subscribe(ANON, "c", topic), read, "{topic}");
        assert_eq!(acl.can_publish(ANON, "c", topic), write, "{topic}");
    }
}

#[test]
fn deny_wins_over_any_allow_whatever_the_order() {
    for text in [
        "topic a/#\ntopic deny a/secret\n",
        "topic deny a/secret\ntopic a/#\n",
        "topic deny a/secret\npattern a/#\n",
        "pattern deny a/secret\ntopic a/#\n",
    ] {
        let acl = acl(text);
        assert!(!acl.can_publish(ANON, "c", "a/secret"), "{text}");
        assert!(!acl.can_receive(ANON, "c", "a/secret"), "{text}");
        assert!(!acl.can_subscribe(ANON, "c", "a/secret"), "{text}");
        assert!(acl.can_publish(ANON, "c", "a/open"), "{text}");
        assert!(acl.can_receive(ANON, "c", "a/open"), "{text}");
    }
}

#[test]
fn what_no_rule_allows_is_denied() {
    let empty = Acl::default();
    assert!(!empty.can_publish(ANON, "c", "a"));
    assert!(!empty.can_subscribe(Some("u"), "c", "#"));
    assert!(!empty.can_receive(Some("u"), "c", "a"));
    let acl = acl("topic a\n");
    assert!(!acl.can_publish(ANON, "c", "b"));
    assert!(!acl.can_publish(ANON, "c", "a/b"));
}

#[test]
fn patterns_substitute_username_and_client_id() {
    let acl = acl("user alice\ntopic x\npattern users/%u/#\npattern read clients/%c\n");
    assert!(acl.can_publish(Some("alice"), "dev1", "users/alice/t"));
    assert!(acl.can_publish(Some("bob"), "dev1", "users/bob/t"));
    assert!(!acl.can_publish(Some("bob"), "dev1", "users/alice/t"));
    assert!(acl.can_receive(Some("bob"), "dev1", "clients/dev1"));
    assert!(!acl.can_publish(Some("bob"), "dev1", "clients/dev1"));
    assert!(!acl.can_receive(Some("bob"), "dev1", "clients/dev2"));
    // %c applies to anonymous clients too.
    assert!(acl.can_receive(ANON, "dev2", "clients/dev2"));
}

#[test]
fn username_pattern_never_matches_an_anonymous_client() {
    let acl = acl("pattern users/%u/#\npattern %u\n");
    assert!(!acl.can_publish(ANON, "c", "users//x"));
    assert!(!acl.can_publish(ANON, "c", "users/x"));
    assert!(!acl.can_subscribe(ANON, "c", "users/+/#"));
}

#[test]
fn inserted_values_are_not_substituted_again() {
    let acl = acl("pattern a/%u/%c\n");
    assert!(acl.can_publish(Some("%c"), "id", "a/%c/id"));
    assert!(!acl.can_publish(Some("%c"), "id", "a/id/id"));
}

#[test]
fn wildcards_in_client_id_or_username_do_not_widen_a_pattern() {
    let acl = acl("pattern clients/%c\npattern users/%u/#\npattern other/%c/x\n");
    for id in ["#", "+", "a+b"] {
        assert!(!acl.can_publish(ANON, id, "clients/other"), "{id}");
        assert!(!acl.can_subscribe(ANON, id, "clients/#"), "{id}");
        assert!(!acl.can_receive(ANON, id, "clients/other"), "{id}");
        assert!(!acl.can_publish(ANON, id, &format!("clients/{id}")), "{id}");
    }
    assert!(!acl.can_publish(Some("#"), "c", "users/bob/x"));
    assert!(!acl.can_subscribe(Some("+"), "c", "users/bob/#"));
    // A plain client id still works.
    assert!(acl.can_publish(ANON, "dev", "clients/dev"));
}

#[test]
fn subscription_must_be_covered_by_an_allow_rule() {
    let acl = acl("topic read a/#\ntopic read b/+\ntopic read c/d\ntopic read +/x/#\n");
    for (filter, allowed) in [
        ("a/#", true),
        ("a/b/+", true),
        ("a/b/c", true),
        ("a", true),
        ("a/+/#", true),
        ("b/c", true),
        ("b/+", true),
        ("b/#", false),
        ("b/c/d", false),
        ("b", false),
        ("c/d", true),
        ("c/+", false),
        ("c/#", false),
        ("q/x/y", true),
        ("+/x/#", true),
        ("+/+/#", false),
        ("#", false),
    ] {
        assert_eq!(acl.can_subscribe(ANON, "c", filter), allowed, "{filter}");
    }
}

#[test]
fn hash_rule_covers_everything_but_dollar_topics() {
    let acl = acl("topic read #\n");
    assert!(acl.can_subscribe(ANON, "c", "#"));
    assert!(acl.can_subscribe(ANON, "c", "a/+/b"));
    assert!(!acl.can_subscribe(ANON, "c", "$SYS/#"));
    assert!(!acl.can_receive(ANON, "c", "$SYS/broker/uptime"));
    let sys = self::acl("topic read $SYS/#\n");
    assert!(sys.can_subscribe(ANON, "c", "$SYS/broker/+"));
    assert!(sys.can_receive(ANON, "c", "$SYS/broker/uptime"));
}

#[test]
fn deny_overlapping_a_subscription_refuses_it() {
    let acl = acl("topic read #\ntopic deny a/secret\ntopic deny +/private/#\n");
    assert!(!acl.can_subscribe(ANON, "c", "a/#"));
    assert!(!acl.can_subscribe(ANON, "c", "a/+"));
    assert!(!acl.can_subscribe(ANON, "c", "#"));
    assert!(!acl.can_subscribe(ANON, "c", "x/private"));
    assert!(!acl.can_subscribe(ANON, "c", "+/+/y"));
    assert!(acl.can_subscribe(ANON, "c", "a/public"));
    assert!(acl.can_subscribe(ANON, "c", "b/public/+"));
    // a/+/deeper could receive a/private/deeper.
    assert!(!acl.can_subscribe(ANON, "c", "a/+/deeper"));
    assert!(acl.can_subscribe(ANON, "c", "b/c/d"));
    // b/+ could receive b/private (`#` also matches the parent level).
    assert!(!acl.can_subscribe(ANON, "c", "b/+"));
    // Receiving is decided per topic: a/# may be refused, a/public still arrives.
    assert!(acl.can_receive(ANON, "c", "a/public"));
    assert!(!acl.can_receive(ANON, "c", "a/secret"));
    assert!(!acl.can_receive(ANON, "c", "x/private/y"));
}

#[test]
fn deny_on_a_dollar_topic_does_not_overlap_leading_wildcards() {
    let acl = acl("topic read #\ntopic read $SYS/#\ntopic deny $SYS/secret\n");
    assert!(acl.can_subscribe(ANON, "c", "#"));
    assert!(acl.can_subscribe(ANON, "c", "+/secret"));
    assert!(!acl.can_subscribe(ANON, "c", "$SYS/#"));
    assert!(acl.can_subscribe(ANON, "c", "$SYS/broker/#"));
}

#[test]
fn invalid_topics_and_filters_are_refused() {
    let acl = acl("topic #\n");
    assert!(!acl.can_publish(ANON, "c", "a/+"));
    assert!(!acl.can_publish(ANON, "c", ""));
    assert!(!acl.can_receive(ANON, "c", "a/#"));
    assert!(!acl.can_subscribe(ANON, "c", "a/#/b"));
    assert!(acl.can_subscribe(ANON, "c", "$share/g/a/b"));
}

#[test]
fn topics_may_contain_spaces_after_an_access_word() {
    let acl = acl("  topic   read   my topic/#  \nuser  bob  \ntopic write his space\n");
    assert!(acl.can_receive(ANON, "c", "my topic/x"));
    assert!(acl.can_publish(Some("bob"), "c", "his space"));
}

#[test]
fn errors_name_the_origin_and_line() {
    for (text, line, expected) in [
        ("topic a\nfrobnicate x\n", 2, "unknown keyword `frobnicate`"),
        ("topic a\n\ntopic raed a/b\n", 3, "unknown access `raed`"),
        ("topic\n", 1, "needs a topic"),
        ("user u\ntopic read\n", 2, "needs a topic"),
        ("# c\npattern deny\n", 2, "needs a topic"),
        ("user\n", 1, "needs a user name"),
        ("topic a/#/b\n", 1, "not a valid topic filter"),
        ("topic read a+\n", 1, "not a valid topic filter"),
        ("pattern %c/#/x\n", 1, "not a valid topic filter"),
        ("Topic a\n", 1, "unknown keyword"),
    ] {
        let err = Acl::parse(text, "/etc/starling/acl").unwrap_err();
        assert!(
            err.starts_with(&format!("/etc/starling/acl:{line}: ")),
            "{text:?}: {err}"
        );
        assert!(err.contains(expected), "{text:?}: {err}");
    }
}

#[test]
fn load_reads_a_file_and_names_it_in_errors() {
    let random = getrandom::u64().unwrap();
    let path = std::env::temp_dir().join(format!("starling-acl-{}-{random:x}", std::process::id()));
    let err = Acl::load(&path).unwrap_err();
    assert!(err.starts_with(&path.display().to_string()), "{err}");
    fs::write(&path, "topic a\nbad line\n").unwrap();
    let err = Acl::load(&path).unwrap_err();
    assert!(err.starts_with(&format!("{}:2: ", path.display())), "{err}");
    fs::write(&path, "topic a\n").unwrap();
    assert!(Acl::load(&path).unwrap().can_publish(ANON, "c", "a"));
    fs::remove_file(&path).unwrap();
}
