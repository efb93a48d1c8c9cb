//! Mosquitto-compatible ACL files: who may publish, subscribe and receive on which topics.
//!
//! This module owns the `security.acl_file` format so that a Mosquitto `acl_file` works in
//! Starling unchanged. It is pure: text in, decisions out; the `SecurityManager` asks it.
//!
//! # Format
//!
//! One directive per line; leading and trailing whitespace is trimmed; blank lines and lines
//! starting with `#` are ignored.
//!
//! - `user <name>`: the `topic` lines that follow apply to that user (the name is the rest of
//!   the line and may contain spaces). A user may have several sections; they add up.
//! - `topic [read|write|readwrite|deny] <topic>`: a rule for the current section. `topic` lines
//!   before the first `user` line apply to anonymous clients (no username). The access word is
//!   optional (default `readwrite`); the topic is the rest of the line. A topic containing spaces
//!   needs an explicit access word, so that a misspelt access word (`topic raed a/b`) is an
//!   error rather than a rule for the topic `raed a/b`.
//! - `pattern [read|write|readwrite|deny] <topic>`: a rule for every client, wherever the line
//!   appears, with `%u` replaced by the username and `%c` by the client id.
//!
//! Unknown keywords, bad access words, missing topics and invalid topic filters are errors that
//! name the file and line.
//!
//! # Semantics
//!
//! - [`Access::Read`] is subscribing and receiving; [`Access::Write`] is publishing.
//! - Once an ACL is loaded, what no rule allows is denied. A `deny` rule that applies wins over
//!   any allow, for reading and writing alike.
//! - The rules of a client are its section's `topic` rules (the anonymous section for a client
//!   without a username, none for a user without a section) plus every `pattern`.
//! - Publish ([`Acl::can_publish`], a topic name): a rule applies when its filter matches the
//!   topic (`+`, `#`; a leading wildcard does not match a `$` topic).
//! - Subscribe ([`Acl::can_subscribe`], a topic filter): an allow rule applies when it *covers*
//!   the subscription, i.e. matches every topic the subscription could match (rule `a/#` covers
//!   `a/b/+` and `a/#`; rule `a/+` covers `a/b` but not `a/#`). A deny rule applies when it
//!   *overlaps* the subscription, i.e. some topic matches both (deny `a/secret` refuses `a/#`).
//! - Receive ([`Acl::can_receive`], a topic name, for deliveries and retained messages): allowed
//!   when a read rule matches the topic and no deny rule does.
//! - `%u` / `%c` are inserted literally. A pattern using `%u` never applies to a client without
//!   a username. As in Mosquitto, a pattern is skipped for a client whose inserted username or
//!   client id contains `+` or `#`, and a pattern whose result is not a valid filter is skipped:
//!   a client id `#` must not turn `clients/%c` into `clients/#`. A `/` is inserted as is.
//! - Rules written as shared subscriptions (`$share/...`) never apply: the subscription checks
//!   see the filter without its `$share/{group}/` prefix.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use starling_proto::topic::{TopicFilter, TopicName};

/// What a client wants to do with a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Subscribe to it, or receive a message published to it.
    Read,
    /// Publish to it.
    Write,
}

/// The access word of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grant {
    Read,
    Write,
    ReadWrite,
    Deny,
}

impl Grant {
    fn parse(word: &str) -> Option<Grant> {
        match word {
            "read" => Some(Grant::Read),
            "write" => Some(Grant::Write),
            "readwrite" => Some(Grant::ReadWrite),
            "deny" => Some(Grant::Deny),
            _ => None,
        }
    }

    fn allows(self, access: Access) -> bool {
        matches!(
            (self, access),
            (Grant::ReadWrite, _) | (Grant::Read, Access::Read) | (Grant::Write, Access::Write)
        )
    }
}

/// A `topic` line: its filter is fixed, so it is validated once at load time.
#[derive(Debug, Clone)]
struct TopicRule {
    grant: Grant,
    filter: TopicFilter,
}

/// A `pattern` line: the filter exists only once a client's username and id are known.
#[derive(Debug, Clone)]
struct PatternRule {
    grant: Grant,
    template: String,
}

/// A loaded ACL file.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    /// `topic` lines before the first `user` line: clients without a username.
    anonymous: Vec<TopicRule>,
    /// `topic` lines under `user <name>`.
    users: HashMap<String, Vec<TopicRule>>,
    /// `pattern` lines, for every client.
    patterns: Vec<PatternRule>,
}

impl Acl {
    /// Reads and parses the file at `path`; errors name the file (and line).
    pub fn load(path: &Path) -> Result<Acl, String> {
        let origin = path.display().to_string();
        let text = fs::read_to_string(path).map_err(|e| format!("{origin}: cannot read: {e}"))?;
        Acl::parse(&text, &origin)
    }

    /// Parses ACL text; `origin` names the file in errors (`"{origin}:{line}: ..."`).
    pub fn parse(text: &str, origin: &str) -> Result<Acl, String> {
        let mut acl = Acl::default();
        let mut section: Option<String> = None;
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let at = |e: String| format!("{origin}:{number}: {e}");
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keyword, rest) = split_word(line);
            match keyword {
                "user" => {
                    if rest.is_empty() {
                        return Err(at("`user` needs a user name".to_owned()));
                    }
                    section = Some(rest.to_owned());
                }
                "topic" => {
                    let (grant, topic) = parse_rule(keyword, rest).map_err(at)?;
                    let filter = valid_filter(topic)
                        .ok_or_else(|| at(format!("`{topic}` is not a valid topic filter")))?;
                    let rule = TopicRule { grant, filter };
                    match &section {
                        Some(user) => acl.users.entry(user.clone()).or_default().push(rule),
                        None => acl.anonymous.push(rule),
                    }
                }
                "pattern" => {
                    let (grant, template) = parse_rule(keyword, rest).map_err(at)?;
                    // Check the shape with harmless stand-ins, so a typo fails at load time.
                    if valid_filter(&substitute(template, Some("u"), "c")).is_none() {
                        return Err(at(format!("`{template}` is not a valid topic filter")));
                    }
                    acl.patterns.push(PatternRule {
                        grant,
                        template: template.to_owned(),
                    });
                }
                other => {
                    return Err(at(format!(
                        "unknown keyword `{other}` (expected user, topic or pattern)"
                    )))
                }
            }
        }
        Ok(acl)
    }

    /// May this client publish to the topic name `topic`?
    pub fn can_publish(&self, username: Option<&str>, client_id: &str, topic: &str) -> bool {
        let Ok(topic) = TopicName::new(topic) else {
            return false;
        };
        self.decide(
            username,
            client_id,
            Access::Write,
            |rule| rule.matches(&topic),
            |deny| deny.matches(&topic),
        )
    }

    /// May this client subscribe to the topic filter `filter`? Allowed when an allow rule covers
    /// every topic the filter could match and no deny rule overlaps it.
    pub fn can_subscribe(&self, username: Option<&str>, client_id: &str, filter: &str) -> bool {
        let Ok(filter) = TopicFilter::new(filter) else {
            return false;
        };
        let filter = filter.matching_filter();
        self.decide(
            username,
            client_id,
            Access::Read,
            |rule| covers(rule.matching_filter(), filter),
            |deny| overlaps(deny.matching_filter(), filter),
        )
    }

    /// May this client receive a message published to the topic name `topic` (a delivery or a
    /// retained message)?
    pub fn can_receive(&self, username: Option<&str>, client_id: &str, topic: &str) -> bool {
        let Ok(topic) = TopicName::new(topic) else {
            return false;
        };
        self.decide(
            username,
            client_id,
            Access::Read,
            |rule| rule.matches(&topic),
            |deny| deny.matches(&topic),
        )
    }

    /// Walks the client's rules: any applying deny refuses, else any applying allow grants.
    fn decide(
        &self,
        username: Option<&str>,
        client_id: &str,
        access: Access,
        allow_applies: impl Fn(&TopicFilter) -> bool,
        deny_applies: impl Fn(&TopicFilter) -> bool,
    ) -> bool {
        let mut allowed = false;
        for (grant, filter) in self.rules_for(username, client_id) {
            if grant == Grant::Deny {
                if deny_applies(&filter) {
                    return false;
                }
            } else if !allowed && grant.allows(access) {
                allowed = allow_applies(&filter);
            }
        }
        allowed
    }

    /// The client's `topic` rules followed by its substituted patterns.
    fn rules_for<'a>(
        &'a self,
        username: Option<&'a str>,
        client_id: &'a str,
    ) -> impl Iterator<Item = (Grant, TopicFilter)> + 'a {
        let fixed = match username {
            Some(user) => self.users.get(user).map(Vec::as_slice).unwrap_or_default(),
            None => &self.anonymous,
        };
        let fixed = fixed.iter().map(|rule| (rule.grant, rule.filter.clone()));
        let patterns = self.patterns.iter().filter_map(move |rule| {
            let template = rule.template.as_str();
            if template.contains("%u") && username.is_none_or(|user| user.contains(['+', '#'])) {
                return None;
            }
            if template.contains("%c") && client_id.contains(['+', '#']) {
                return None;
            }
            let filter = valid_filter(&substitute(template, username, client_id))?;
            Some((rule.grant, filter))
        });
        fixed.chain(patterns)
    }
}

/// The first whitespace-separated word of `line` and the trimmed rest.
fn split_word(line: &str) -> (&str, &str) {
    match line.split_once(char::is_whitespace) {
        Some((word, rest)) => (word, rest.trim()),
        None => (line, ""),
    }
}

/// `[access] <topic>` after `topic` or `pattern`.
fn parse_rule<'a>(keyword: &str, rest: &'a str) -> Result<(Grant, &'a str), String> {
    if rest.is_empty() {
        return Err(format!("`{keyword}` needs a topic"));
    }
    let (word, topic) = split_word(rest);
    match Grant::parse(word) {
        Some(_) if topic.is_empty() => Err(format!("`{keyword} {word}` needs a topic")),
        Some(grant) => Ok((grant, topic)),
        None if topic.is_empty() => Ok((Grant::ReadWrite, rest)),
        None => Err(format!(
            "unknown access `{word}` (expected read, write, readwrite or deny)"
        )),
    }
}

/// `text` as a filter usable in a rule: valid, and not a shared subscription.
fn valid_filter(text: &str) -> Option<TopicFilter> {
    TopicFilter::new(text)
        .ok()
        .filter(|filter| filter.shared_group().is_none())
}

/// Replaces `%u` and `%c` in one pass, so an inserted value is never substituted again.
fn substitute(template: &str, username: Option<&str>, client_id: &str) -> String {
    let mut out = String::with_capacity(template.len() + client_id.len());
    let mut rest = template;
    while let Some(at) = rest.find('%') {
        let (before, after) = rest.split_at(at);
        out.push_str(before);
        if let Some(tail) = after.strip_prefix("%u") {
            out.push_str(username.unwrap_or_default());
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("%c") {
            out.push_str(client_id);
            rest = tail;
        } else {
            out.push('%');
            rest = after.get(1..).unwrap_or_default();
        }
    }
    out.push_str(rest);
    out
}

/// True when the first level is `+` or `#`: such a filter does not match `$` topics.
fn starts_with_wildcard(filter: &str) -> bool {
    filter.starts_with(['+', '#'])
}

/// True when every topic the subscription `sub` could match is matched by `rule` (both valid,
/// non-shared filters).
fn covers(rule: &str, sub: &str) -> bool {
    if sub.starts_with('$') && starts_with_wildcard(rule) {
        return false;
    }
    let mut rule_levels = rule.split('/');
    let mut sub_levels = sub.split('/');
    loop {
        match (rule_levels.next(), sub_levels.next()) {
            (Some("#"), _) => return true,
            (None, None) => return true,
            (Some("+"), Some(level)) if level != "#" => {}
            (Some(r), Some(s)) if r == s && s != "+" && s != "#" => {}
            _ => return false,
        }
    }
}

/// True when some topic is matched by both filters (both valid, non-shared).
fn overlaps(a: &str, b: &str) -> bool {
    if (a.starts_with('$') && starts_with_wildcard(b))
        || (b.starts_with('$') && starts_with_wildcard(a))
    {
        return false;
    }
    let mut a_levels = a.split('/');
    let mut b_levels = b.split('/');
    loop {
        match (a_levels.next(), b_levels.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (None, None) => return true,
            (Some("+"), Some(_)) | (Some(_), Some("+")) => {}
            (Some(x), Some(y)) if x == y => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
#[path = "acl_tests.rs"]
mod tests;
