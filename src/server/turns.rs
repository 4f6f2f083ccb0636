//! Turns of the loop, and the work left over from one turn for the next.
//!
//! A turn is one `poll` and everything done with its events. A handler that
//! runs out of its budget (a connection's reads, a listener's accepts, a UDP
//! socket's datagrams) with work still waiting in the kernel gets no new
//! event for it (readiness is edge-triggered), so its token is queued and
//! served again on the next turn, and the poll does not sleep meanwhile.
//!
//! Two promises make the budget mean something:
//!
//! - a token is queued at most once, however often its handler yields;
//! - a token runs at most once per turn, whether it was queued, got a fresh
//!   event, or both (an event for a queued token is served at once, and the
//!   queued entry then finds it already served).
//!
//! Without them a client that streams without pause is queued again by
//! every run and added once more by every fresh edge: its entries multiply
//! turn after turn (seen under strace: 164, 168, 172 … 308 reads between two
//! `epoll_wait`s) and it takes an ever larger share of each turn.
//!
//! Each source that can be queued (a connection's slot, a listener, a UDP
//! socket) embeds a [`Mark`]; the loop passes it in, since the marks live in
//! containers this type does not own.

use mio::Token;

/// Where one source stands with the queue.
#[derive(Debug, Default, Clone, Copy)]
pub struct Mark {
    /// It is in the queue for the next turn.
    queued: bool,
    /// The last turn in which it ran.
    ran: u64,
}

/// The turn counter and the queue of tokens to serve next turn.
#[derive(Debug)]
pub struct Turns {
    /// The current turn; starts at 1, so that a fresh `Mark` has not run.
    turn: u64,
    /// Tokens to serve on the next turn, each once.
    next: Vec<Token>,
}

impl Default for Turns {
    fn default() -> Turns {
        Turns {
            turn: 1,
            next: Vec::new(),
        }
    }
}

impl Turns {
    /// Whether work is queued (the next poll must not sleep).
    pub fn has_queued(&self) -> bool {
        !self.next.is_empty()
    }

    /// Starts a new turn and hands over the tokens queued for it. The caller
    /// calls [`Turns::dequeued`] on each one's mark before serving anything,
    /// so that a handler which yields again this turn is queued anew.
    pub fn begin(&mut self, into: &mut Vec<Token>) {
        self.turn += 1;
        into.clear();
        std::mem::swap(into, &mut self.next);
    }

    /// A token taken off the queue by [`Turns::begin`].
    pub fn dequeued(mark: &mut Mark) {
        mark.queued = false;
    }

    /// Whether a source may run now: not if it already ran this turn. A
    /// `true` answer counts as its run.
    pub fn may_run(&self, mark: &mut Mark) -> bool {
        if mark.ran == self.turn {
            return false;
        }
        mark.ran = self.turn;
        true
    }

    /// Queues `token` for the next turn, unless it is queued already.
    pub fn requeue(&mut self, token: Token, mark: &mut Mark) {
        if !mark.queued {
            mark.queued = true;
            self.next.push(token);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source that always has more work than its budget, as a client that
    /// streams without pause: every run yields, and every turn also brings
    /// a fresh event for it (new data arrived).
    #[test]
    fn a_source_that_always_yields_runs_once_per_turn_and_is_queued_once() {
        let mut turns = Turns::default();
        let mut mark = Mark::default();
        let token = Token(7);
        let mut due = Vec::new();
        let mut runs_per_turn = Vec::new();
        for _ in 0..100 {
            turns.begin(&mut due);
            for _ in &due {
                Turns::dequeued(&mut mark);
            }
            let mut runs = 0;
            // The fresh event first, as the loop serves events first.
            if turns.may_run(&mut mark) {
                runs += 1;
                turns.requeue(token, &mut mark);
            }
            for _ in &due {
                if turns.may_run(&mut mark) {
                    runs += 1;
                    turns.requeue(token, &mut mark);
                }
            }
            runs_per_turn.push(runs);
            assert!(turns.next.len() <= 1, "queued {} times", turns.next.len());
        }
        assert!(runs_per_turn.iter().all(|&r| r == 1), "{runs_per_turn:?}");
    }

    #[test]
    fn a_queued_source_without_events_runs_every_turn_until_it_stops_yielding() {
        let mut turns = Turns::default();
        let mut mark = Mark::default();
        let mut due = Vec::new();
        assert!(turns.may_run(&mut mark));
        turns.requeue(Token(3), &mut mark);
        for left in (0..5).rev() {
            assert!(turns.has_queued());
            turns.begin(&mut due);
            assert_eq!(due, [Token(3)]);
            Turns::dequeued(&mut mark);
            assert!(turns.may_run(&mut mark));
            assert!(!turns.may_run(&mut mark), "twice in one turn");
            if left > 0 {
                turns.requeue(Token(3), &mut mark);
            }
        }
        turns.begin(&mut due);
        assert!(due.is_empty());
        assert!(!turns.has_queued());
    }
}
