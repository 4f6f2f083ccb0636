//! The connections' slots: a slab (keys reused, the last freed first) whose
//! entries are built and dropped where they lie.
//!
//! The `slab` crate's `insert` takes the value and moves it into its entry,
//! and `remove` moves it out again to return it: for a connection's slot,
//! over 200 bytes, that was a copy in and a copy out per connection, in a
//! function of its own (about 85 instructions a connection under churn).
//! Here a new slot is written into its entry by the caller, field by field
//! once inlined (`vacant`, then `fill`), and a closed one is dropped in its
//! entry (`drop_at`); `remove` still moves a slot out for the rare callers
//! that want it whole.

/// Entries by key; `None` is a free one, its key on `free`.
#[derive(Debug)]
pub struct Slots<T> {
    entries: Vec<Option<T>>,
    /// Free keys, the last freed on top (reused first, as `slab` does, so
    /// keys stay dense and low).
    free: Vec<usize>,
    len: usize,
}

impl<T> Default for Slots<T> {
    fn default() -> Slots<T> {
        Slots {
            entries: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slots<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The key the next `fill` will use: a free entry, or a new one at the
    /// end. Nothing is taken until `fill`.
    #[inline]
    pub fn vacant(&mut self) -> usize {
        match self.free.last() {
            Some(&key) => key,
            None => {
                self.grow();
                self.entries.len() - 1
            }
        }
    }

    /// One more free entry at the end; out of line, as it is rare once the
    /// number of connections has peaked.
    #[cold]
    #[inline(never)]
    fn grow(&mut self) {
        self.entries.push(None);
        self.free.push(self.entries.len() - 1);
    }

    /// Puts `value` in the entry `vacant` just gave. Inlined, so that a
    /// value built in the call is written straight into the entry.
    #[inline(always)]
    pub fn fill(&mut self, key: usize, value: T) -> &mut T {
        let popped = self.free.pop();
        debug_assert_eq!(popped, Some(key), "fill takes the key vacant gave");
        self.len += 1;
        let entry = &mut self.entries[key];
        debug_assert!(entry.is_none(), "fill on an occupied entry");
        entry.insert(value)
    }

    /// Inserts `value` under a free key (the tests' shorthand).
    #[cfg(test)]
    pub fn insert(&mut self, value: T) -> usize {
        let key = self.vacant();
        self.fill(key, value);
        key
    }

    #[inline]
    pub fn get(&self, key: usize) -> Option<&T> {
        self.entries.get(key).and_then(Option::as_ref)
    }

    #[inline]
    pub fn get_mut(&mut self, key: usize) -> Option<&mut T> {
        self.entries.get_mut(key).and_then(Option::as_mut)
    }

    /// Drops the value under `key` where it lies; its key is free again.
    /// Panics if there is none.
    #[inline]
    pub fn drop_at(&mut self, key: usize) {
        let entry = &mut self.entries[key];
        assert!(entry.is_some(), "no slot under key {key}");
        *entry = None;
        self.free.push(key);
        self.len -= 1;
    }

    /// Takes the value under `key` out. Panics if there is none.
    pub fn remove(&mut self, key: usize) -> T {
        let value = self.entries[key]
            .take()
            .unwrap_or_else(|| panic!("no slot under key {key}"));
        self.free.push(key);
        self.len -= 1;
        value
    }

    /// Every value, with its key, in order of key.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &T)> {
        (self.entries.iter().enumerate()).filter_map(|(key, e)| e.as_ref().map(|v| (key, v)))
    }

    /// Drops every value; the keys start from 0 again.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.free.clear();
        self.len = 0;
    }
}

impl<T> std::ops::Index<usize> for Slots<T> {
    type Output = T;

    #[inline]
    fn index(&self, key: usize) -> &T {
        match self.entries.get(key) {
            Some(Some(value)) => value,
            _ => panic!("no slot under key {key}"),
        }
    }
}

impl<T> std::ops::IndexMut<usize> for Slots<T> {
    #[inline]
    fn index_mut(&mut self, key: usize) -> &mut T {
        match self.entries.get_mut(key) {
            Some(Some(value)) => value,
            _ => panic!("no slot under key {key}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    /// Counts its drops.
    struct Counted(Rc<Cell<u32>>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }

    #[test]
    fn keys_are_reused_last_freed_first() {
        let mut s = Slots::default();
        assert_eq!((s.insert('a'), s.insert('b'), s.insert('c')), (0, 1, 2));
        s.drop_at(0);
        assert_eq!(s.remove(2), 'c');
        assert_eq!(
            (s.len(), s.get(0), s.get(2), s.get(1)),
            (1, None, None, Some(&'b'))
        );
        assert_eq!(s.vacant(), 2, "the last freed first");
        assert_eq!(s.insert('d'), 2);
        assert_eq!(s.insert('e'), 0);
        assert_eq!(s.insert('f'), 3, "then new keys at the end");
        let all: Vec<(usize, char)> = s.iter().map(|(k, &v)| (k, v)).collect();
        assert_eq!(all, [(0, 'e'), (1, 'b'), (2, 'd'), (3, 'f')]);
        s[1] = 'B';
        assert_eq!((s[1], s.len(), s.is_empty()), ('B', 4, false));
        s.clear();
        assert_eq!((s.len(), s.is_empty(), s.get(1)), (0, true, None));
        assert_eq!(s.insert('g'), 0);
    }

    #[test]
    fn vacant_takes_nothing_until_filled() {
        let mut s = Slots::default();
        let key = s.vacant();
        assert_eq!((s.vacant(), s.len(), s.get(key)), (key, 0, None));
        *s.fill(key, 7) += 1;
        assert_eq!((s[key], s.len(), s.vacant()), (8, 1, 1));
    }

    #[test]
    fn drop_at_drops_once_and_frees_the_key() {
        let drops = Rc::new(Cell::new(0));
        let mut s = Slots::default();
        let a = s.insert(Counted(drops.clone()));
        let b = s.insert(Counted(drops.clone()));
        s.drop_at(a);
        assert_eq!((drops.get(), s.len(), s.get(a).is_none()), (1, 1, true));
        drop(s.remove(b));
        assert_eq!(drops.get(), 2);
        s.insert(Counted(drops.clone()));
        drop(s);
        assert_eq!(drops.get(), 3, "the rest are dropped with the store");
    }

    #[test]
    #[should_panic(expected = "no slot under key 0")]
    fn indexing_a_free_key_panics() {
        let mut s = Slots::default();
        let key = s.insert(1);
        s.drop_at(key);
        let _ = s[key];
    }
}
