//! `TopicTree`: values by topic name (retained messages), found by topic filter.
//!
//! The mirror image of [`crate::trie`]: there the stored keys are filters and a topic is
//! matched against them; here the stored keys are topic names and a filter is matched against
//! them. A SUBSCRIBE to `a/+/c` then visits the children of `a` and one grandchild each, not
//! every retained topic; only `#` (at any level) visits a whole subtree, which it matches.
//!
//! Topic names are attacker-controlled and may have tens of thousands of levels. A node per
//! level would make one such topic cost megabytes, so topics deeper than [`TREE_LEVELS`] are
//! kept whole beside the tree and matched by a scan (there are few of them, and they cost what
//! their names cost). The tree itself is therefore at most [`TREE_LEVELS`] deep, which bounds
//! the recursion of removal, pruning and dropping; `Debug` shows sizes, not the contents.

use std::collections::HashMap;
use std::fmt;

use crate::topic::matches_str;

/// Topics with more levels than this are kept beside the tree, not in it.
pub const TREE_LEVELS: usize = 64;

/// Values keyed by topic name, level by level.
pub struct TopicTree<V> {
    root: Node<V>,
    /// Topics deeper than [`TREE_LEVELS`], whole.
    deep: HashMap<Box<str>, V>,
    len: usize,
}

impl<V> fmt::Debug for TopicTree<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TopicTree")
            .field("len", &self.len)
            .field("deep", &self.deep.len())
            .finish_non_exhaustive()
    }
}

/// Whether `topic` is kept beside the tree.
fn is_deep(topic: &str) -> bool {
    topic.bytes().filter(|&b| b == b'/').count() >= TREE_LEVELS
}

/// One level of the tree: the value of the topic ending here, and the levels below.
struct Node<V> {
    value: Option<V>,
    children: HashMap<Box<str>, Node<V>>,
}

impl<V> Default for Node<V> {
    fn default() -> Self {
        Node {
            value: None,
            children: HashMap::new(),
        }
    }
}

impl<V> Node<V> {
    fn is_empty(&self) -> bool {
        self.value.is_none() && self.children.is_empty()
    }

    /// Removes the value at `levels` below this node, pruning nodes it leaves empty.
    fn remove<'a>(&mut self, mut levels: impl Iterator<Item = &'a str>) -> Option<V> {
        let Some(level) = levels.next() else {
            return self.value.take();
        };
        let child = self.children.get_mut(level)?;
        let value = child.remove(levels)?;
        if child.is_empty() {
            self.children.remove(level);
        }
        Some(value)
    }

    /// Drops the values below this node that `keep` refuses, and the nodes left empty; the
    /// number dropped.
    fn retain(&mut self, keep: &mut impl FnMut(&V) -> bool) -> usize {
        let mut dropped = 0;
        self.children.retain(|_, child| {
            if child.value.as_ref().is_some_and(|v| !keep(v)) {
                child.value = None;
                dropped += 1;
            }
            dropped += child.retain(keep);
            !child.is_empty()
        });
        dropped
    }
}

impl<V> TopicTree<V> {
    /// An empty tree.
    pub fn new() -> TopicTree<V> {
        TopicTree {
            root: Node::default(),
            deep: HashMap::new(),
            len: 0,
        }
    }

    /// Number of topics holding a value.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no topic holds a value.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sets the value of `topic` (a valid topic name), returning the one it replaces.
    pub fn insert(&mut self, topic: &str, value: V) -> Option<V> {
        let old = if is_deep(topic) {
            self.deep.insert(Box::from(topic), value)
        } else {
            let mut node = &mut self.root;
            for level in topic.split('/') {
                node = node.children.entry(Box::from(level)).or_default();
            }
            node.value.replace(value)
        };
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// The value of `topic`, if any.
    pub fn get(&self, topic: &str) -> Option<&V> {
        if is_deep(topic) {
            return self.deep.get(topic);
        }
        let mut node = &self.root;
        for level in topic.split('/') {
            node = node.children.get(level)?;
        }
        node.value.as_ref()
    }

    /// Removes the value of `topic`; nodes left with neither value nor children are pruned.
    pub fn remove(&mut self, topic: &str) -> Option<V> {
        let value = if is_deep(topic) {
            self.deep.remove(topic)
        } else {
            self.root.remove(topic.split('/'))
        }?;
        self.len -= 1;
        Some(value)
    }

    /// Calls `f` with every topic's value that `filter` (a valid, non-shared filter) matches.
    ///
    /// Honours [MQTT-4.7.2-1] (`#` and `+` at the first level do not match topics starting
    /// with `$`) and lets `a/#` match `a`.
    pub fn for_each_match(&self, filter: &str, mut f: impl FnMut(&V)) {
        for (topic, value) in &self.deep {
            if matches_str(filter, topic) {
                f(value);
            }
        }
        // (node, the filter levels left after it: `None` when the filter ended there).
        let mut stack: Vec<(&Node<V>, Option<&str>, bool)> = vec![(&self.root, Some(filter), true)];
        while let Some((node, rest, at_root)) = stack.pop() {
            let Some(rest) = rest else {
                if let Some(value) = &node.value {
                    f(value);
                }
                continue;
            };
            let (level, after) = match rest.split_once('/') {
                Some((level, after)) => (level, Some(after)),
                None => (rest, None),
            };
            let visible = |name: &str| !(at_root && name.starts_with('$'));
            match level {
                "#" => {
                    // `a/#` matches `a` itself, and every topic below it.
                    if !at_root {
                        if let Some(value) = &node.value {
                            f(value);
                        }
                    }
                    let mut below: Vec<&Node<V>> = node
                        .children
                        .iter()
                        .filter(|(name, _)| visible(name))
                        .map(|(_, child)| child)
                        .collect();
                    while let Some(n) = below.pop() {
                        if let Some(value) = &n.value {
                            f(value);
                        }
                        below.extend(n.children.values());
                    }
                }
                "+" => {
                    for (name, child) in &node.children {
                        if visible(name) {
                            stack.push((child, after, false));
                        }
                    }
                }
                literal => {
                    if let Some(child) = node.children.get(literal) {
                        stack.push((child, after, false));
                    }
                }
            }
        }
    }

    /// Keeps only the values for which `keep` is true, pruning emptied branches in place.
    pub fn retain(&mut self, mut keep: impl FnMut(&V) -> bool) {
        let before = self.deep.len();
        self.deep.retain(|_, v| keep(v));
        let dropped = before - self.deep.len() + self.root.retain(&mut keep);
        self.len -= dropped;
    }
}

impl<V> Default for TopicTree<V> {
    fn default() -> Self {
        TopicTree::new()
    }
}

#[cfg(test)]
#[path = "topic_tree_tests.rs"]
mod tests;
