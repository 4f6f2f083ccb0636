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

use slab::Slab;

/// "No neighbour".
const NIL: u32 = u32::MAX;

/// A slot's place in the list: the neighbours' slab keys, as `u32` to keep
/// every connection 8 bytes smaller (the slab never holds 4 billion).
#[derive(Debug, Clone, Copy)]
pub struct Link {
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

/// Anything stored in the slab that can be on the list.
pub trait Linked {
    fn link(&mut self) -> &mut Link;
}

/// Ends of the list; the links live in the slots.
#[derive(Debug)]
pub struct IdleList {
    head: u32,
    tail: u32,
}

impl Default for IdleList {
    fn default() -> IdleList {
        IdleList {
            head: NIL,
            tail: NIL,
        }
    }
}

impl IdleList {
    /// The connection idle the longest.
    pub fn front(&self) -> Option<usize> {
        (self.head != NIL).then_some(self.head as usize)
    }

    /// Appends `key` (not on the list) as the most recently active.
    pub fn push_back<T: Linked>(&mut self, slab: &mut Slab<T>, key: usize) {
        let key32 = u32::try_from(key).expect("slab key fits u32");
        *slab[key].link() = Link {
            prev: self.tail,
            next: NIL,
        };
        if self.tail == NIL {
            self.head = key32;
        } else {
            slab[self.tail as usize].link().next = key32;
        }
        self.tail = key32;
    }

    /// Takes `key` (on the list) off it.
    pub fn unlink<T: Linked>(&mut self, slab: &mut Slab<T>, key: usize) {
        let Link { prev, next } = std::mem::take(slab[key].link());
        if prev == NIL {
            self.head = next;
        } else {
            slab[prev as usize].link().next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            slab[next as usize].link().prev = prev;
        }
    }

    /// `key` was just active: it moves to the back.
    pub fn touch<T: Linked>(&mut self, slab: &mut Slab<T>, key: usize) {
        if self.tail as usize != key {
            self.unlink(slab, key);
            self.push_back(slab, key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Item(Link);
    impl Linked for Item {
        fn link(&mut self) -> &mut Link {
            &mut self.0
        }
    }

    fn order(list: &IdleList, slab: &mut Slab<Item>) -> Vec<usize> {
        let mut keys = Vec::new();
        let mut at = list.head;
        while at != NIL {
            keys.push(at as usize);
            at = slab[at as usize].link().next;
        }
        // The backward links agree.
        let mut back = Vec::new();
        let mut at = list.tail;
        while at != NIL {
            back.push(at as usize);
            at = slab[at as usize].link().prev;
        }
        back.reverse();
        assert_eq!(keys, back);
        keys
    }

    #[test]
    fn keeps_keys_in_order_of_activity() {
        let mut slab = Slab::new();
        let mut list = IdleList::default();
        let keys: Vec<usize> = (0..4).map(|_| slab.insert(Item(Link::default()))).collect();
        for &k in &keys {
            list.push_back(&mut slab, k);
        }
        assert_eq!(order(&list, &mut slab), [0, 1, 2, 3]);
        list.touch(&mut slab, 0);
        assert_eq!(order(&list, &mut slab), [1, 2, 3, 0]);
        list.touch(&mut slab, 2);
        assert_eq!(order(&list, &mut slab), [1, 3, 0, 2]);
        list.touch(&mut slab, 2);
        assert_eq!(order(&list, &mut slab), [1, 3, 0, 2]);
        list.unlink(&mut slab, 1);
        slab.remove(1);
        assert_eq!(list.front(), Some(3));
        list.unlink(&mut slab, 2);
        slab.remove(2);
        assert_eq!(order(&list, &mut slab), [3, 0]);
        list.unlink(&mut slab, 3);
        list.unlink(&mut slab, 0);
        assert_eq!(list.front(), None);
        assert_eq!(order(&list, &mut slab), Vec::<usize>::new());
    }
}
