//! Topic names and topic filters: validated newtypes and MQTT topic matching.
//!
//! A `TopicName` is where a message is published; a `TopicFilter` is what a subscription
//! asks for, with `+` / `#` wildcards and the `$share/{group}/{filter}` shared form. Both are
//! validated once, when built, so the rest of the broker never re-checks a string; both are
//! backed by an `Arc<str>` because one topic is held by many messages, sessions and tries.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// The longest topic a UTF-8 Encoded String can carry ([MQTT-1.5.4]).
const MAX_LEN: usize = 65_535;

/// The prefix of a shared subscription filter ([MQTT-4.8.2]).
const SHARE_PREFIX: &str = "$share/";

/// Why a string is not a valid topic name or topic filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Topic names and filters are at least one character long ([MQTT-4.7.3-1]).
    #[error("a topic must not be empty")]
    Empty,
    /// Longer than the 65 535 bytes a UTF-8 Encoded String can hold.
    #[error("a topic must not be longer than 65535 bytes ({0} bytes)")]
    TooLong(usize),
    /// U+0000 is forbidden in every MQTT string ([MQTT-4.7.3-2]).
    #[error("a topic must not contain the null character U+0000")]
    NullCharacter,
    /// `+` or `#` in a topic name ([MQTT-3.3.2-2]).
    #[error("a topic name must not contain the wildcards '+' or '#'")]
    WildcardInName,
    /// `#` not alone as the last level, or `+` not alone in its level ([MQTT-4.7.1-1/2]).
    #[error("a wildcard must fill a whole level, and '#' must be the last level")]
    MisplacedWildcard,
    /// `$share/{group}/...` with an empty group or one holding `+`, `#` ([MQTT-4.8.2-2]).
    #[error("a shared subscription group must be non-empty and must not contain '+', '#' or '/'")]
    InvalidShareGroup,
    /// `$share/{group}` with nothing after the group ([MQTT-4.8.2-1]).
    #[error("a shared subscription needs a topic filter after '$share/{{group}}/'")]
    MissingSharedFilter,
}

/// Checks what names and filters have in common: non-empty, not too long, no U+0000.
fn check_common(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_LEN {
        return Err(TopicError::TooLong(s.len()));
    }
    if s.contains('\0') {
        return Err(TopicError::NullCharacter);
    }
    Ok(())
}

/// A topic name: where a message is published. Never holds wildcards.
///
/// Cheap to clone (an `Arc<str>`), compares and hashes as its string, so a
/// `HashMap<TopicName, _>` can be queried with a `&str`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(Arc<str>);

impl TopicName {
    /// Validates a topic name: non-empty, at most 65 535 bytes, no U+0000, no `+` or `#`.
    pub fn new(name: &str) -> Result<TopicName, TopicError> {
        check_common(name)?;
        if name.contains(['+', '#']) {
            return Err(TopicError::WildcardInName);
        }
        Ok(TopicName(Arc::from(name)))
    }

    /// The empty topic name. It exists only for an MQTT 5 PUBLISH whose topic is replaced by a
    /// Topic Alias property ([MQTT-3.3.2-1] allows nothing else): the connection resolves the
    /// alias and builds the real name before the message goes anywhere. An empty name matches
    /// no filter.
    pub fn empty() -> TopicName {
        TopicName(Arc::from(""))
    }

    /// The topic as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True only for [`TopicName::empty`], the Topic Alias placeholder.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True for topics starting with `$` (such as `$SYS/...`): wildcard filters at the first
    /// level do not match them ([MQTT-4.7.2-1]) and clients may not be allowed to publish there.
    pub fn is_system(&self) -> bool {
        self.0.starts_with('$')
    }

    /// The `/`-separated levels of the name; empty levels are kept (`a//b` has three).
    pub fn levels(&self) -> impl Iterator<Item = &str> + '_ {
        self.0.split('/')
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::str::FromStr for TopicName {
    type Err = TopicError;

    fn from_str(s: &str) -> Result<TopicName, TopicError> {
        TopicName::new(s)
    }
}

impl AsRef<str> for TopicName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for TopicName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// A topic filter: what a subscription asks for, possibly with wildcards, possibly shared.
///
/// Cheap to clone (an `Arc<str>`); equality and hashing are those of the full filter string
/// (including any `$share/{group}/` prefix), so a `HashMap<TopicFilter, _>` can be queried with a
/// `&str`.
#[derive(Clone)]
pub struct TopicFilter {
    /// The whole filter as received, `$share/{group}/` prefix included.
    full: Arc<str>,
    /// Byte offset where the matching filter starts: 0 unless the filter is shared.
    filter_start: usize,
}

impl TopicFilter {
    /// Validates a topic filter: non-empty, at most 65 535 bytes, no U+0000, `+` only as a whole
    /// level, `#` only as the whole last level; `$share/{group}/{filter}` needs a non-empty group
    /// without `+`, `#` or `/`, and a valid filter after it.
    pub fn new(filter: &str) -> Result<TopicFilter, TopicError> {
        check_common(filter)?;
        let filter_start = match filter.strip_prefix(SHARE_PREFIX) {
            Some(rest) => {
                let Some((group, matching)) = rest.split_once('/') else {
                    return Err(if rest.is_empty() || rest.contains(['+', '#']) {
                        TopicError::InvalidShareGroup
                    } else {
                        TopicError::MissingSharedFilter
                    });
                };
                if group.is_empty() || group.contains(['+', '#']) {
                    return Err(TopicError::InvalidShareGroup);
                }
                if matching.is_empty() {
                    return Err(TopicError::MissingSharedFilter);
                }
                filter.len() - matching.len()
            }
            None => 0,
        };
        let matching = filter.get(filter_start..).unwrap_or_default();
        check_wildcards(matching)?;
        Ok(TopicFilter {
            full: Arc::from(filter),
            filter_start,
        })
    }

    /// The whole filter, `$share/{group}/` prefix included.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The share group of a shared subscription (`g` in `$share/g/a/b`), else `None`.
    pub fn shared_group(&self) -> Option<&str> {
        if self.filter_start == 0 {
            return None;
        }
        self.full
            .get(SHARE_PREFIX.len()..self.filter_start.saturating_sub(1))
    }

    /// The filter that topics are matched against: the part after `$share/{group}/` for a
    /// shared subscription, else the whole filter. This is what goes into a [`crate::trie::Trie`].
    pub fn matching_filter(&self) -> &str {
        self.full.get(self.filter_start..).unwrap_or_default()
    }

    /// True when the matching filter holds `+` or `#`; brokers may refuse such subscriptions
    /// (Wildcard Subscription Available).
    pub fn has_wildcards(&self) -> bool {
        self.matching_filter().contains(['+', '#'])
    }

    /// True when a message published to `topic` is delivered to this subscription.
    ///
    /// Levels compare exactly; `+` matches any one level (an empty one too); `#` matches the
    /// rest, including the parent level (`a/#` matches `a`). Topics starting with `$` are not
    /// matched by a filter starting with a wildcard ([MQTT-4.7.2-1]). The empty Topic Alias
    /// placeholder matches nothing.
    pub fn matches(&self, topic: &TopicName) -> bool {
        !topic.is_empty() && matches_str(self.matching_filter(), topic.as_str())
    }
}

/// Checks wildcard placement in a (non-shared) filter.
fn check_wildcards(filter: &str) -> Result<(), TopicError> {
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        match level {
            "#" if levels.peek().is_some() => return Err(TopicError::MisplacedWildcard),
            "#" | "+" => {}
            _ if level.contains(['+', '#']) => return Err(TopicError::MisplacedWildcard),
            _ => {}
        }
    }
    Ok(())
}

/// MQTT matching of a valid, non-shared filter against a topic name, by levels.
pub(crate) fn matches_str(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut filter_levels = filter.split('/');
    let mut topic_levels = topic.split('/');
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(t)) if f == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

impl PartialEq for TopicFilter {
    fn eq(&self, other: &TopicFilter) -> bool {
        self.full == other.full
    }
}

impl Eq for TopicFilter {}

impl Hash for TopicFilter {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialOrd for TopicFilter {
    fn partial_cmp(&self, other: &TopicFilter) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for TopicFilter {
    fn cmp(&self, other: &TopicFilter) -> std::cmp::Ordering {
        self.full.cmp(&other.full)
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl fmt::Debug for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.full, f)
    }
}

impl std::str::FromStr for TopicFilter {
    type Err = TopicError;

    fn from_str(s: &str) -> Result<TopicFilter, TopicError> {
        TopicFilter::new(s)
    }
}

impl AsRef<str> for TopicFilter {
    fn as_ref(&self) -> &str {
        &self.full
    }
}

impl Borrow<str> for TopicFilter {
    fn borrow(&self) -> &str {
        &self.full
    }
}

#[cfg(test)]
#[path = "topic_tests.rs"]
mod tests;
