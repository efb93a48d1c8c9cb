//! The subscription trie: topic filters, level by level, to subscribers.
//!
//! Each TopicNode actor keeps one of these; routing a PUBLISH is one [`Trie::for_each_match`]
//! walk, so that walk allocates nothing in the common case and visits only the branches that
//! can match: the exact child for the level, the `+` child, and the `#` subscribers at each node.
//! The trie is generic over the subscriber key (a session, a share group) and the value kept
//! for it (subscription options, identifiers).
//!
//! Filters are attacker-controlled and may have tens of thousands of levels, so nothing here
//! recurses on the depth of the trie: matching uses an explicit stack (inline for the first
//! levels, spilling to the heap only for very deep walks) and dropping a node is iterative.

use std::collections::HashMap;
use std::hash::Hash;

/// A subscription trie keyed by the levels of (already validated, non-shared) topic filters.
///
/// One entry per (filter, key): inserting the same pair again replaces the value.
pub struct Trie<K, V> {
    root: Node<K, V>,
    len: usize,
}

impl<K, V> std::fmt::Debug for Trie<K, V> {
    /// Sizes only: a derived `Debug` would recurse through the levels of deep filters.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trie")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

struct Node<K, V> {
    /// Children for literal levels (`a`, `$SYS`, the empty level).
    children: HashMap<Box<str>, Node<K, V>>,
    /// The child for a `+` level.
    plus: Option<Box<Node<K, V>>>,
    /// Subscribers whose filter ends at this node.
    exact: HashMap<K, V>,
    /// Subscribers whose filter is this node's path followed by `/#` (or `#` at the root):
    /// they match any topic at or below this node.
    multi: HashMap<K, V>,
}

impl<K, V> Default for Node<K, V> {
    fn default() -> Self {
        Node {
            children: HashMap::new(),
            plus: None,
            exact: HashMap::new(),
            multi: HashMap::new(),
        }
    }
}

impl<K, V> Node<K, V> {
    fn child(&self, level: &str) -> Option<&Node<K, V>> {
        if level == "+" {
            self.plus.as_deref()
        } else {
            self.children.get(level)
        }
    }

    fn child_mut(&mut self, level: &str) -> Option<&mut Node<K, V>> {
        if level == "+" {
            self.plus.as_deref_mut()
        } else {
            self.children.get_mut(level)
        }
    }

    fn child_count(&self) -> usize {
        self.children.len() + usize::from(self.plus.is_some())
    }

    fn has_subscribers(&self) -> bool {
        !self.exact.is_empty() || !self.multi.is_empty()
    }
}

impl<K, V> Drop for Node<K, V> {
    /// Drops the subtree iteratively: a filter with 30 000 levels must not overflow the stack.
    fn drop(&mut self) {
        if self.child_count() == 0 {
            return;
        }
        let mut pending: Vec<Node<K, V>> = self.children.drain().map(|(_, n)| n).collect();
        pending.extend(self.plus.take().map(|n| *n));
        while let Some(mut node) = pending.pop() {
            pending.extend(node.children.drain().map(|(_, n)| n));
            pending.extend(node.plus.take().map(|n| *n));
            // `node` now has no children: dropping it does not recurse.
        }
    }
}

/// Splits a filter into the path of levels to its node and whether it ends in `#`.
/// `None` as the path is the root (the filter `#`).
fn split_filter(filter: &str) -> (Option<&str>, bool) {
    if filter == "#" {
        (None, true)
    } else if let Some(path) = filter.strip_suffix("/#") {
        (Some(path), true)
    } else {
        (Some(filter), false)
    }
}

impl<K: Eq + Hash + Clone, V> Trie<K, V> {
    /// An empty trie.
    pub fn new() -> Trie<K, V> {
        Trie {
            root: Node::default(),
            len: 0,
        }
    }

    /// Number of (filter, key) entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the trie holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `key` under `filter` (a matching filter, already validated: for a shared
    /// subscription, the part after `$share/{group}/`). Returns the previous value when the
    /// same key was already subscribed with the same filter.
    pub fn insert(&mut self, filter: &str, key: K, value: V) -> Option<V> {
        let (path, multi) = split_filter(filter);
        let mut node = &mut self.root;
        for level in path.into_iter().flat_map(|p| p.split('/')) {
            node = if level == "+" {
                node.plus.get_or_insert_with(Box::default)
            } else {
                node.children.entry(Box::from(level)).or_default()
            };
        }
        let slot = if multi {
            &mut node.multi
        } else {
            &mut node.exact
        };
        let old = slot.insert(key, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// The value stored for `key` under `filter`, if any.
    pub fn get(&self, filter: &str, key: &K) -> Option<&V> {
        let (path, multi) = split_filter(filter);
        let mut node = &self.root;
        for level in path.into_iter().flat_map(|p| p.split('/')) {
            node = node.child(level)?;
        }
        if multi {
            node.multi.get(key)
        } else {
            node.exact.get(key)
        }
    }

    /// Removes `key` from under `filter` and returns its value; nodes left without
    /// subscribers or children are pruned.
    pub fn remove(&mut self, filter: &str, key: &K) -> Option<V> {
        let (path, multi) = split_filter(filter);
        let levels = || path.into_iter().flat_map(|p| p.split('/'));

        // Pass 1 (read only): find the entry, and the shallowest level from which the path
        // holds nothing but this entry, so that the whole chain below it can be cut off.
        let depth = levels().count();
        let mut cut: Option<usize> = None;
        let mut node = &self.root;
        for (index, level) in levels().enumerate() {
            node = node.child(level)?;
            if index + 1 == depth {
                break;
            }
            if node.child_count() == 1 && !node.has_subscribers() {
                cut = cut.or(Some(index));
            } else {
                cut = None;
            }
        }
        let slot = if multi { &node.multi } else { &node.exact };
        if !slot.contains_key(key) {
            return None;
        }
        let becomes_empty = node.child_count() == 0 && node.exact.len() + node.multi.len() == 1;
        // The run of single-child nodes must reach down to the target node, which empties.
        let cut = if becomes_empty && depth > 0 {
            Some(cut.unwrap_or(depth - 1))
        } else {
            None
        };

        // Pass 2: take the value out.
        let mut node = &mut self.root;
        for level in levels() {
            node = node.child_mut(level)?;
        }
        let value = if multi {
            node.multi.remove(key)
        } else {
            node.exact.remove(key)
        }?;
        self.len -= 1;

        // Pass 3: cut off the now empty chain below its last non-empty ancestor.
        if let Some(cut) = cut {
            let mut parent = &mut self.root;
            let mut detach = None;
            for (depth, level) in levels().enumerate() {
                if depth == cut {
                    detach = Some(level);
                    break;
                }
                parent = parent.child_mut(level)?;
            }
            match detach {
                Some("+") => drop(parent.plus.take()),
                Some(level) => drop(parent.children.remove(level)),
                None => {}
            }
        }
        Some(value)
    }

    /// Calls `f` once for every (filter, key) entry whose filter matches `topic`.
    ///
    /// Honours [MQTT-4.7.2-1] (`#` and `+` at the first level do not match topics starting
    /// with `$`) and lets `a/#` match `a`. Allocates nothing unless the walk is deeper than
    /// [`INLINE_DEPTH`] pending branches.
    pub fn for_each_match(&self, topic: &str, mut f: impl FnMut(&K, &V)) {
        let system = topic.starts_with('$');
        let mut stack = WalkStack::new();
        // The root: `#` and `+` are skipped for `$` topics.
        if !system {
            self.root.multi.iter().for_each(|(k, v)| f(k, v));
        }
        let (level, rest) = split_level(topic);
        if let Some(child) = self.root.children.get(level) {
            stack.push((child, rest));
        }
        if !system {
            if let Some(plus) = self.root.plus.as_deref() {
                stack.push((plus, rest));
            }
        }
        while let Some((node, rest)) = stack.pop() {
            node.multi.iter().for_each(|(k, v)| f(k, v));
            match rest {
                None => node.exact.iter().for_each(|(k, v)| f(k, v)),
                Some(rest) => {
                    let (level, rest) = split_level(rest);
                    if let Some(child) = node.children.get(level) {
                        stack.push((child, rest));
                    }
                    if let Some(plus) = node.plus.as_deref() {
                        stack.push((plus, rest));
                    }
                }
            }
        }
    }
}

impl<K: Eq + Hash + Clone, V> Default for Trie<K, V> {
    fn default() -> Self {
        Trie::new()
    }
}

/// The first level of `topic` and what follows its `/`, or `None` when it was the last level.
fn split_level(topic: &str) -> (&str, Option<&str>) {
    match topic.split_once('/') {
        Some((level, rest)) => (level, Some(rest)),
        None => (topic, None),
    }
}

/// How many pending branches a match walk keeps on the call stack before spilling to the heap.
pub const INLINE_DEPTH: usize = 32;

/// A node still to visit, with the topic levels left after it (`None`: the topic ends there).
type Frame<'a, K, V> = (&'a Node<K, V>, Option<&'a str>);

/// A LIFO stack: inline up to [`INLINE_DEPTH`] frames, then on the heap.
struct WalkStack<'a, K, V> {
    inline: [Option<Frame<'a, K, V>>; INLINE_DEPTH],
    inline_len: usize,
    spill: Vec<Frame<'a, K, V>>,
}

impl<'a, K, V> WalkStack<'a, K, V> {
    fn new() -> Self {
        WalkStack {
            inline: [None; INLINE_DEPTH],
            inline_len: 0,
            spill: Vec::new(),
        }
    }

    fn push(&mut self, frame: Frame<'a, K, V>) {
        match self.inline.get_mut(self.inline_len) {
            Some(slot) => {
                *slot = Some(frame);
                self.inline_len += 1;
            }
            None => self.spill.push(frame),
        }
    }

    fn pop(&mut self) -> Option<Frame<'a, K, V>> {
        if let Some(frame) = self.spill.pop() {
            return Some(frame);
        }
        self.inline_len = self.inline_len.checked_sub(1)?;
        self.inline.get_mut(self.inline_len)?.take()
    }
}

#[cfg(test)]
#[path = "trie_tests.rs"]
mod tests;
