//! Idle timeouts without scanning: the connections form a list in order of
//! their last activity, threaded through the slab (each slot holds its
//! neighbours' keys). Activity moves a connection to the back, closing
//! unlinks it, and the front is always the connection idle the longest, so
//! the nearest deadline is `front.last_active + idle_timeout` and expiring is
//! a walk from the front that stops at the first connection not yet due.
//!
//! Every operation is O(1) and nothing is left behind by closed connections
//! (a heap of deadlines would keep stale entries until they came due). The
//! order does not depend on the timeout, so a reload may change it freely.

/// "No neighbour".
const NIL: u32 = u32::MAX;

/// A connection's place in the list: its neighbours' slab keys, as `u32`
/// (the slab never holds 4 billion).
#[derive(Debug, Clone, Copy)]
struct Link {
    prev: u32,
    next: u32,
}

impl Default for Link {
    fn default() -> Link {
        Link {
            prev: NIL,
            next: NIL,
        }
    }
}

/// The list: its ends, and every slab key's links in a vector of their
/// own, indexed by the key (8 bytes a slot, as the slab's slots once held
/// them). Apart from the slab, a touch reads and writes three small
/// entries of one dense array, with no check that the slab entry is
/// occupied, and the loop can touch a connection while it holds the
/// connection's slot.
#[derive(Debug)]
pub struct IdleList {
    head: u32,
    tail: u32,
    links: Vec<Link>,
}

impl Default for IdleList {
    fn default() -> IdleList {
        IdleList {
            head: NIL,
            tail: NIL,
            links: Vec::new(),
        }
    }
}

impl IdleList {
    /// The connection idle the longest.
    pub fn front(&self) -> Option<usize> {
        (self.head != NIL).then_some(self.head as usize)
    }

    /// Appends `key` (not on the list) as the most recently active.
    #[inline]
    pub fn push_back(&mut self, key: usize) {
        let key32 = u32::try_from(key).expect("slab key fits u32");
        if key >= self.links.len() {
            self.grow(key);
        }
        self.link_back(key32);
    }

    /// Room for `key`'s links. The slab's keys are dense: this grows by
    /// one, now and then; out of line, so the list's every step stays small.
    #[cold]
    #[inline(never)]
    fn grow(&mut self, key: usize) {
        self.links.resize(key + 1, Link::default());
    }

    /// Links `key` (within `links`, not on the list) at the back.
    #[inline]
    fn link_back(&mut self, key: u32) {
        self.links[key as usize] = Link {
            prev: self.tail,
            next: NIL,
        };
        if self.tail == NIL {
            self.head = key;
        } else {
            self.links[self.tail as usize].next = key;
        }
        self.tail = key;
    }

    /// Takes `key` (on the list) off it.
    #[inline]
    pub fn unlink(&mut self, key: usize) {
        let Link { prev, next } = std::mem::take(&mut self.links[key]);
        if prev == NIL {
            self.head = next;
        } else {
            self.links[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.links[next as usize].prev = prev;
        }
    }

    /// `key` (on the list) was just active: it moves to the back.
    ///
    /// Not `unlink` then `link_back`: a key on the list that is not its
    /// tail has a next, and the tail stays where it is, so two of their
    /// four "is it an end" tests are known and left out (this runs on
    /// every event that moves bytes).
    #[inline]
    pub fn touch(&mut self, key: usize) {
        let tail = self.tail;
        if tail as usize == key {
            return;
        }
        // On the list, so within `links` and below u32::MAX.
        let Link { prev, next } = self.links[key];
        if prev == NIL {
            self.head = next;
        } else {
            self.links[prev as usize].next = next;
        }
        self.links[next as usize].prev = prev;
        self.links[key] = Link {
            prev: tail,
            next: NIL,
        };
        self.links[tail as usize].next = key as u32;
        self.tail = key as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(list: &IdleList) -> Vec<usize> {
        let mut keys = Vec::new();
        let mut at = list.head;
        while at != NIL {
            keys.push(at as usize);
            at = list.links[at as usize].next;
        }
        // The backward links agree.
        let mut back = Vec::new();
        let mut at = list.tail;
        while at != NIL {
            back.push(at as usize);
            at = list.links[at as usize].prev;
        }
        back.reverse();
        assert_eq!(keys, back);
        keys
    }

    #[test]
    fn keeps_keys_in_order_of_activity() {
        let mut list = IdleList::default();
        for k in 0..4 {
            list.push_back(k);
        }
        assert_eq!(order(&list), [0, 1, 2, 3]);
        list.touch(0);
        assert_eq!(order(&list), [1, 2, 3, 0]);
        list.touch(2);
        assert_eq!(order(&list), [1, 3, 0, 2]);
        list.touch(2);
        assert_eq!(order(&list), [1, 3, 0, 2]);
        list.unlink(1);
        assert_eq!(list.front(), Some(3));
        list.unlink(2);
        assert_eq!(order(&list), [3, 0]);
        // A key used again (the slab reuses a freed slot), and one far
        // beyond any before (the links grow).
        list.push_back(1);
        list.push_back(9);
        assert_eq!(order(&list), [3, 0, 1, 9]);
        list.touch(3);
        assert_eq!(order(&list), [0, 1, 9, 3]);
        for k in [3, 0, 9, 1] {
            list.unlink(k);
        }
        assert_eq!(list.front(), None);
        assert_eq!(order(&list), Vec::<usize>::new());
    }

    #[test]
    fn keys_out_of_order_grow_the_links() {
        let mut list = IdleList::default();
        list.push_back(5);
        list.push_back(2);
        list.push_back(9);
        assert_eq!(order(&list), [5, 2, 9]);
        list.touch(5);
        assert_eq!(order(&list), [2, 9, 5]);
    }
}
