//! The manager's tables: its probe records and its loaded objects, each keyed by a type of its
//! own. A key stays valid for the manager's life: removing an entry leaves its slot empty
//! instead of shifting the others, so keys held elsewhere (the attach-order stack, a record's
//! object, per-object constants) never need fixing up.

use std::{marker::PhantomData, ops};

/// A key of a [`Table`].
pub(super) trait Key: Copy {
    fn from_slot(slot: usize) -> Self;
    fn slot(self) -> usize;
}

/// The key of a probe record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct RecordKey(usize);

/// The key of a loaded object: [`ObjectKey::MAIN`] is the object given to `init`, the others
/// are clones and per-probe copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct ObjectKey(usize);

impl ObjectKey {
    /// The object given to `init`.
    pub(super) const MAIN: Self = Self(0);
}

impl Key for RecordKey {
    fn from_slot(slot: usize) -> Self {
        Self(slot)
    }
    fn slot(self) -> usize {
        self.0
    }
}

impl Key for ObjectKey {
    fn from_slot(slot: usize) -> Self {
        Self(slot)
    }
    fn slot(self) -> usize {
        self.0
    }
}

/// Entries of type `T` under keys of type `K`, in insertion order.
#[derive(Debug)]
pub(super) struct Table<K, T> {
    slots: Vec<Option<T>>,
    key: PhantomData<K>,
}

impl<K, T> Default for Table<K, T> {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            key: PhantomData,
        }
    }
}

impl<K: Key, T> Table<K, T> {
    /// A table with room for `n` entries.
    pub(super) fn with_capacity(n: usize) -> Self {
        Self {
            slots: Vec::with_capacity(n),
            key: PhantomData,
        }
    }

    /// Adds `value` and returns its key.
    pub(super) fn push(&mut self, value: T) -> K {
        self.slots.push(Some(value));
        K::from_slot(self.slots.len() - 1)
    }

    /// Removes the entry of `key`; its key is never reused.
    pub(super) fn remove(&mut self, key: K) -> Option<T> {
        self.slots.get_mut(key.slot()).and_then(Option::take)
    }

    pub(super) fn get(&self, key: K) -> Option<&T> {
        self.slots.get(key.slot()).and_then(Option::as_ref)
    }

    pub(super) fn get_mut(&mut self, key: K) -> Option<&mut T> {
        self.slots.get_mut(key.slot()).and_then(Option::as_mut)
    }

    /// The keys of the live entries, in insertion order.
    pub(super) fn keys(&self) -> impl Iterator<Item = K> + '_ {
        self.iter().map(|(k, _)| k)
    }

    /// The live entries with their keys, in insertion order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (K, &T)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, v)| Some((K::from_slot(i), v.as_ref()?)))
    }

    /// The live entries, mutable, with their keys.
    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (K, &mut T)> + '_ {
        self.slots
            .iter_mut()
            .enumerate()
            .filter_map(|(i, v)| Some((K::from_slot(i), v.as_mut()?)))
    }

    /// The live entries.
    pub(super) fn values(&self) -> impl Iterator<Item = &T> + '_ {
        self.slots.iter().flatten()
    }

    /// The live entries, mutable.
    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut T> + '_ {
        self.slots.iter_mut().flatten()
    }

    /// Removes every entry.
    pub(super) fn clear(&mut self) {
        self.slots.clear();
    }
}

/// The entry of a key the caller knows is live (a key from this table's own iteration, or held
/// by a record whose object lives); a removed one is a bug of the manager.
impl<K: Key + std::fmt::Debug, T> ops::Index<K> for Table<K, T> {
    type Output = T;
    fn index(&self, key: K) -> &T {
        self.get(key)
            .unwrap_or_else(|| panic!("{key:?} names a removed entry"))
    }
}

impl<K: Key + std::fmt::Debug, T> ops::IndexMut<K> for Table<K, T> {
    fn index_mut(&mut self, key: K) -> &mut T {
        self.get_mut(key)
            .unwrap_or_else(|| panic!("{key:?} names a removed entry"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_valid_when_an_entry_goes() {
        let mut t: Table<RecordKey, &str> = Table::default();
        let a = t.push("a");
        let b = t.push("b");
        let c = t.push("c");
        assert_eq!(t.remove(b), Some("b"));
        assert_eq!(t.remove(b), None);
        assert_eq!(t[a], "a");
        assert_eq!(t[c], "c");
        assert_eq!(t.keys().collect::<Vec<_>>(), [a, c]);
        let d = t.push("d");
        assert_ne!(d, b, "a removed key is not reused");
        assert_eq!(t.values().copied().collect::<Vec<_>>(), ["a", "c", "d"]);
        assert!(t.get(b).is_none());
    }
}
