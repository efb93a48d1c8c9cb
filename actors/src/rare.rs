//! `Rare<T>`: state most actors never use, kept out of line until it holds something.
//!
//! A Session or Connection is one allocation per client, alive as long as the client, so every
//! inline field is paid by every idle client. An empty `HashSet` is 48 bytes inline; as a
//! `Rare<HashSet<_>>` it is 8 until the first insert, and `clear` gives the memory back.

/// An optional, boxed `T`, created empty on first use; see the module docs.
#[derive(Debug)]
pub(crate) struct Rare<T>(Option<Box<T>>);

impl<T> Default for Rare<T> {
    fn default() -> Self {
        Rare(None)
    }
}

impl<T> Rare<T> {
    /// The value, if it was ever created (and not cleared since).
    pub(crate) fn get(&self) -> Option<&T> {
        self.0.as_deref()
    }

    /// Like `get`, mutably.
    pub(crate) fn get_mut(&mut self) -> Option<&mut T> {
        self.0.as_deref_mut()
    }

    /// Empties it and gives its memory back.
    pub(crate) fn clear(&mut self) {
        self.0 = None;
    }
}

impl<T: Default> Rare<T> {
    /// The value, created empty on first use.
    pub(crate) fn get_or_default(&mut self) -> &mut T {
        self.0.get_or_insert_with(Box::default)
    }
}

#[cfg(test)]
mod tests {
    use super::Rare;
    use std::collections::HashSet;

    #[test]
    fn is_created_on_first_use_and_released_by_clear() {
        let mut ids: Rare<HashSet<u16>> = Rare::default();
        assert!(ids.get().is_none());
        assert!(ids.get_mut().is_none());
        ids.get_or_default().insert(7);
        assert!(ids.get().is_some_and(|s| s.contains(&7)));
        ids.clear();
        assert!(ids.get().is_none());
        assert_eq!(std::mem::size_of::<Rare<HashSet<u16>>>(), 8);
    }
}
