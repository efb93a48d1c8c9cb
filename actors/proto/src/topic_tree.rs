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
//! their names cost). Nothing here recurses on depth either: the match walk keeps an explicit
//! stack, removal finds what to prune in a read-only pass first, dropping a subtree is
//! iterative, and `Debug` shows sizes, not the tree.

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

impl<V> Drop for Node<V> {
    /// Drops the subtree iteratively: a topic with 30 000 levels must not overflow the stack.
    fn drop(&mut self) {
        if self.children.is_empty() {
            return;
        }
        let mut pending: Vec<Node<V>> = self.children.drain().map(|(_, n)| n).collect();
        while let Some(mut node) = pending.pop() {
            pending.extend(node.children.drain().map(|(_, n)| n));
            // `node` now has no children: dropping it does not recurse.
        }
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
        if is_deep(topic) {
            let old = self.deep.insert(Box::from(topic), value);
            if old.is_none() {
                self.len += 1;
            }
            return old;
        }
        let mut node = &mut self.root;
        for level in topic.split('/') {
            node = node.children.entry(Box::from(level)).or_default();
        }
        let old = node.value.replace(value);
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
        if is_deep(topic) {
            let value = self.deep.remove(topic)?;
            self.len -= 1;
            return Some(value);
        }
        // Pass 1 (read only): find the value, and the shallowest level from which the path
        // holds nothing but it, so that the whole chain below can be cut off at once.
        let depth = topic.split('/').count();
        let mut cut: Option<usize> = None;
        let mut node = &self.root;
        for (index, level) in topic.split('/').enumerate() {
            node = node.children.get(level)?;
            if index + 1 == depth {
                break;
            }
            if node.children.len() == 1 && node.value.is_none() {
                cut = cut.or(Some(index));
            } else {
                cut = None;
            }
        }
        node.value.as_ref()?;
        let cut = node.children.is_empty().then(|| cut.unwrap_or(depth - 1));

        // Pass 2: take the value out.
        let mut node = &mut self.root;
        for level in topic.split('/') {
            node = node.children.get_mut(level)?;
        }
        let value = node.value.take()?;
        self.len -= 1;

        // Pass 3: cut the emptied chain off its last ancestor that keeps something.
        if let Some(cut) = cut {
            let mut parent = &mut self.root;
            for (index, level) in topic.split('/').enumerate() {
                if index == cut {
                    parent.children.remove(level);
                    break;
                }
                parent = parent.children.get_mut(level)?;
            }
        }
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

    /// Keeps only the values for which `keep` is true, pruning emptied branches. The tree is
    /// rebuilt only when something goes: a read-only pass looks first.
    pub fn retain(&mut self, mut keep: impl FnMut(&V) -> bool) {
        let before = self.deep.len();
        self.deep.retain(|_, v| keep(v));
        let mut removed = before - self.deep.len();
        if self.any_in_tree(|v| !keep(v)) {
            retain_node(&mut self.root, &mut keep, &mut removed);
        }
        self.len -= removed;
    }

    /// Whether any value in the tree (not the deep topics) satisfies `f`.
    fn any_in_tree(&self, mut f: impl FnMut(&V) -> bool) -> bool {
        let mut pending = vec![&self.root];
        while let Some(node) = pending.pop() {
            if node.value.as_ref().is_some_and(&mut f) {
                return true;
            }
            pending.extend(node.children.values());
        }
        false
    }
}

/// Applies `keep` below `root` and prunes emptied nodes, without recursion: nodes are taken
/// out of their parents, handled, and put back only if something is left in them.
fn retain_node<V>(root: &mut Node<V>, keep: &mut impl FnMut(&V) -> bool, removed: &mut usize) {
    if root.value.as_ref().is_some_and(|v| !keep(v)) {
        root.value = None;
        *removed += 1;
    }
    // Each frame: a detached node, its name, and the index of its parent frame (None: the
    // root). Children are detached before their parents are re-attached.
    let mut frames: Vec<(Box<str>, Node<V>, Option<usize>)> = root
        .children
        .drain()
        .map(|(name, node)| (name, node, None))
        .collect();
    let mut next = 0;
    while next < frames.len() {
        let children: Vec<(Box<str>, Node<V>)> = frames[next].1.children.drain().collect();
        if frames[next].1.value.as_ref().is_some_and(|v| !keep(v)) {
            frames[next].1.value = None;
            *removed += 1;
        }
        for (name, node) in children {
            frames.push((name, node, Some(next)));
        }
        next += 1;
    }
    // Children come after their parents in `frames`: re-attach from the back.
    while let Some((name, node, parent)) = frames.pop() {
        if node.value.is_none() && node.children.is_empty() {
            continue;
        }
        let into = match parent {
            Some(index) => &mut frames[index].1.children,
            None => &mut root.children,
        };
        into.insert(name, node);
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
