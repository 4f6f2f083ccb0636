//! The uppercase transform: pure, bytes in, bytes out. No sockets, no logging.
//!
//! # Data flow
//!
//! The server hands every TCP read to the connection's [`Upcaser::feed`] and
//! every UDP datagram to [`upcase_into`]; both append the transformed bytes
//! to a caller-owned `Vec<u8>`: the loop's shared scratch buffer, written to
//! the socket at once, or a connection's queue of replies the kernel has
//! not taken yet. The transform itself never allocates anything but growth
//! of that buffer.
//!
//! In [`Mode::Ascii`] each byte is handled on its own, so pieces can be
//! transformed independently and nothing is ever remembered between calls.
//!
//! In [`Mode::Unicode`] the unit is a UTF-8 encoded character, 1 to 4 bytes
//! long, and TCP is free to split a character across two reads. A piece that
//! ends in the first 1, 2 or 3 bytes of a character which is still *valid so
//! far* cannot be decided yet: the next byte may complete it (upper-case it) or
//! break it (pass it unchanged). Those bytes are kept back in a small *carry*
//! inside the [`Upcaser`] and decided on the next `feed` (or flushed unchanged
//! by [`Upcaser::finish`] at end of stream). The carry never holds more than 3
//! bytes because a UTF-8 sequence is at most 4 bytes long: once 4 bytes of a
//! valid prefix are seen the character is complete. Keeping the carry inline
//! (no heap) keeps an `Upcaser` at 5 bytes, which matters with tens of
//! thousands of connections.
//!
//! The result of streaming is defined to be exactly that of transforming the
//! whole stream at once: split it with `<[u8]>::utf8_chunks`, upper-case every
//! valid chunk with `str::to_uppercase`, copy every invalid chunk unchanged.
//! Because `str::to_uppercase` maps each `char` on its own (no context), only
//! character boundaries matter, which is why carrying at most one partial
//! character is enough.
//!
//! # Performance
//!
//! This is the server's hot path, and in unicode mode it has two
//! implementations of the same contract, picked once per process by what
//! the CPU has ([`Level`]):
//!
//! - `portable.rs`, on every architecture: a piece's leading ASCII run
//!   takes a block-at-a-time path written so LLVM vectorizes it; then one
//!   loop over an 8-byte window stores ASCII words upper-cased, and every
//!   other char as one step that looks it up by its first two bytes (its
//!   2-byte upper case, or "no case here: copy") and stores it into the
//!   output's reserved capacity; the rare rest is decoded in full.
//! - `x86.rs` (x86_64 with AVX2): 32 bytes at a time; a block whose chars
//!   cannot have case (ASCII, CJK, kana, Hangul, emoji, Arabic, invalid
//!   bytes) is stored at once with its ASCII letters upper-cased, and the
//!   rest is handed to the portable step.
//!
//! Both answer every non-ASCII char from `table.rs`: the upper case of every
//! char, built from `char::to_uppercase` at start-up ([`warm_up`]), so no
//! char ever goes through `to_uppercase`'s binary search while serving.
//! Figures per script: `bench/results/transform.md`.

mod portable;
mod table;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};

use table::Table;

/// How bytes are turned into upper case.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Byte-wise: `a`-`z` become `A`-`Z`, every other byte is unchanged.
    /// Binary-safe; the output is exactly as long as the input.
    Ascii,
    /// Full Unicode upper-case mapping of valid UTF-8 (as `str::to_uppercase`,
    /// so `ß` becomes `SS`); bytes that are not valid UTF-8 pass unchanged.
    #[default]
    Unicode,
}

impl Mode {
    /// The name used in the config file and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Ascii => "ascii",
            Mode::Unicode => "unicode",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "ascii" => Ok(Mode::Ascii),
            "unicode" => Ok(Mode::Unicode),
            other => Err(format!(
                "unknown mode {other:?}: expected \"ascii\" or \"unicode\""
            )),
        }
    }
}

/// [`Level::best`], once detected: 0 not yet, else the level's value + 1.
static BEST: AtomicU8 = AtomicU8::new(0);

/// Which implementation of unicode mode runs. [`Level::best`] is what
/// [`Upcaser::feed`] and [`upcase_into`] use; the `_at` functions take a
/// level explicitly so that tests, the fuzz target and the benchmarks can
/// run each one on the same machine. Every level gives the same bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Level {
    /// Plain Rust, every architecture.
    Portable,
    /// x86_64 with AVX2 (checked at run time).
    Avx2,
}

impl Level {
    /// The fastest level this CPU runs, detected once.
    #[inline]
    pub fn best() -> Level {
        match BEST.load(Ordering::Relaxed) {
            1 => Level::Portable,
            2 => Level::Avx2,
            _ => Level::detect(),
        }
    }

    /// [`Level::best`] the first time, out of line.
    #[cold]
    fn detect() -> Level {
        let best = Level::available().pop().unwrap_or(Level::Portable);
        BEST.store(best as u8 + 1, Ordering::Relaxed);
        best
    }

    /// The levels this CPU can run, slowest first.
    pub fn available() -> Vec<Level> {
        #[cfg(target_arch = "x86_64")]
        let avx2 = x86::available().then_some(Level::Avx2);
        // Other architectures: the portable level only.
        #[cfg(not(target_arch = "x86_64"))]
        let avx2 = None;
        [Some(Level::Portable), avx2]
            .into_iter()
            .flatten()
            .collect()
    }

    /// The name used by the benchmarks and the fuzz target.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Portable => "portable",
            Level::Avx2 => "avx2",
        }
    }
}

/// Largest number of output bytes one input byte can produce, for sizing
/// buffers: at most `max_growth(mode) * n` bytes come out of `n` bytes in.
///
/// Ascii mode maps byte to byte, so 1. In unicode mode the worst case is 3:
/// e.g. `ΐ` (U+0390, 2 bytes) upper-cases to `Ϊ́` (three 2-byte chars, 6
/// bytes); invalid bytes pass 1:1. The value is checked by a test that scans
/// every `char`.
///
/// For [`Upcaser::feed`] count the carried bytes as input too: they come
/// out of the call that completes their character, even when that call gets
/// a single new byte, so the bound for one call is
/// `max_growth(mode) * (input.len() + upcaser.carried())`. A call may
/// reserve [`reserve_slack`] more capacity than that.
pub const fn max_growth(mode: Mode) -> usize {
    match mode {
        Mode::Ascii => 1,
        Mode::Unicode => 3,
    }
}

/// Spare capacity, beyond `max_growth(mode) * (input.len() + carried)`,
/// that one call may reserve in its output: unicode mode's loops store
/// whole words and vectors past the bytes they keep, and reserve per chunk
/// for the worst growth of the chunk plus the widest such store
/// (`portable::SLACK`; the last 4..=7 bytes' step reserves `3 * 8` more
/// than its 3 bytes per byte). A caller that sizes a buffer so that a call
/// never reallocates it (the server's output buffers, which must stay
/// within their bound) leaves this much more room.
pub const fn reserve_slack(mode: Mode) -> usize {
    match mode {
        Mode::Ascii => 0,
        Mode::Unicode => portable::SLACK + 3 * 8,
    }
}

/// Streaming transformer, one per TCP connection.
///
/// Kept tiny (5 bytes, no heap) because tens of thousands of them live at
/// once. The only state is the mode and the carry: up to 3 bytes of a UTF-8
/// character that the previous piece ended in the middle of (see the module
/// docs for why 3 is enough).
#[derive(Clone, Debug)]
pub struct Upcaser {
    mode: Mode,
    /// Bytes of an incomplete but so-far valid UTF-8 sequence; only
    /// `carry[..carry_len]` is meaningful.
    carry: [u8; 3],
    carry_len: u8,
}

impl Upcaser {
    /// A transformer at the start of a stream (nothing carried).
    pub fn new(mode: Mode) -> Upcaser {
        Upcaser {
            mode,
            carry: [0; 3],
            carry_len: 0,
        }
    }

    /// The mode this transformer was created with.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Appends the transform of `input` to `out`.
    ///
    /// In unicode mode, a valid-but-incomplete UTF-8 sequence at the end of
    /// `input` (at most 3 bytes) is kept back and completed (or found
    /// invalid) by the next call, so feeding a stream in any pieces gives the
    /// same bytes as [`upcase`] on the whole stream. Carried bytes, once
    /// decided, come out at the start of this call's output.
    #[inline]
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        self.feed_inline(input, out);
    }

    /// [`Upcaser::feed`], always inlined: for the server's steady-state
    /// path, where the caller's frame is already set up and a call's
    /// prologue and epilogue would cost more than an ASCII request's
    /// blocks.
    #[inline(always)]
    pub fn feed_inline(&mut self, input: &[u8], out: &mut Vec<u8>) {
        #[cfg(target_arch = "x86_64")]
        if self.mode == Mode::Unicode && self.carry_len == 0 && Level::best() == Level::Avx2 {
            // Most requests are ASCII: done here, block by block, with
            // nothing else to set up (`feed_at` takes what is left).
            // SAFETY: `best` is Avx2 only when the CPU has AVX2.
            let done = unsafe { x86::ascii_blocks(input, out) };
            if done < input.len() {
                self.feed_at(Level::Avx2, &input[done..], out);
            }
            return;
        }
        self.feed_at(Level::best(), input, out);
    }

    /// [`Upcaser::feed`] with the implementation `level` (the portable one
    /// if this CPU cannot run it): for tests and benchmarks.
    pub fn feed_at(&mut self, level: Level, input: &[u8], out: &mut Vec<u8>) {
        match self.mode {
            Mode::Ascii => ascii_mode_at(level, input, out),
            Mode::Unicode => {
                // One reservation per call: the ASCII path then never
                // reallocates; only expanding non-ASCII chars may grow further.
                out.reserve(input.len() + usize::from(self.carry_len));
                let rest = if self.carry_len == 0 {
                    input
                } else {
                    match self.resolve_carry(input, out) {
                        Some(rest) => rest,
                        // Still incomplete: all of `input` went into the carry.
                        None => return,
                    }
                };
                let tail = unicode_body(level, rest, out);
                // `tail` is at most 3: a longer valid prefix is a complete char.
                if tail > 0 {
                    let start = rest.len() - tail;
                    self.carry[..tail].copy_from_slice(&rest[start..]);
                    self.carry_len = tail as u8;
                }
            }
        }
    }

    /// Decides the carried partial character using the first bytes of
    /// `input`. Returns the part of `input` not yet consumed, or `None` if
    /// `input` was too short to decide and has been added to the carry.
    fn resolve_carry<'a>(&mut self, input: &'a [u8], out: &mut Vec<u8>) -> Option<&'a [u8]> {
        let c = usize::from(self.carry_len);
        // The carried sequence starts at carry[0] and is at most 4 bytes
        // long, so at most 4 - c input bytes can take part in deciding it.
        let take = input.len().min(4 - c);
        let mut window = [0u8; 4];
        window[..c].copy_from_slice(&self.carry[..c]);
        window[c..c + take].copy_from_slice(&input[..take]);
        let window = &window[..c + take];
        let consumed = match decode(window) {
            Seq::Char(ch, n) => {
                portable::push_entry(Table::get().lookup(ch), out);
                n - c
            }
            Seq::Invalid(n) => {
                // The carry is a valid prefix, so the invalid run covers at
                // least all of it; it may also swallow input bytes that
                // continued the prefix validly before the break. The breaking
                // byte itself is not part of the run: decoding resumes there.
                debug_assert!(n >= c);
                out.extend_from_slice(&window[..n]);
                n - c
            }
            Seq::Incomplete => {
                // Only possible when all of `input` fitted in the window
                // (4 bytes of a valid prefix are always decided), so the new
                // carry is at most 3 bytes.
                debug_assert!(take == input.len() && window.len() <= 3);
                self.carry[..window.len()].copy_from_slice(window);
                self.carry_len = window.len() as u8;
                return None;
            }
        };
        self.carry_len = 0;
        Some(&input[consumed..])
    }

    /// End of stream: appends any carried bytes unchanged, since an
    /// incomplete sequence at the very end is invalid UTF-8 and invalid bytes
    /// pass through. The transformer is then back at a fresh stream state.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.carry[..usize::from(self.carry_len)]);
        self.carry_len = 0;
    }

    /// Number of bytes currently carried (0..=3); always 0 in ascii mode.
    pub fn carried(&self) -> usize {
        usize::from(self.carry_len)
    }

    /// The carried bytes themselves: what a restart hands to the next
    /// process (see `server::handover`).
    pub fn carry(&self) -> &[u8] {
        &self.carry[..usize::from(self.carry_len)]
    }

    /// A transformer in the middle of a stream, holding `carry` as
    /// [`feed`](Upcaser::feed) left it in another process. `None` when
    /// `carry` is nothing `feed` could have left (more than 3 bytes, any
    /// in ascii mode, or not the start of a valid but unfinished UTF-8
    /// character): the rest of the transform relies on that.
    pub fn resume(mode: Mode, carry: &[u8]) -> Option<Upcaser> {
        let mut upcaser = Upcaser::new(mode);
        if carry.is_empty() {
            return Some(upcaser);
        }
        if mode == Mode::Ascii || carry.len() > 3 || !matches!(decode(carry), Seq::Incomplete) {
            return None;
        }
        upcaser.carry[..carry.len()].copy_from_slice(carry);
        upcaser.carry_len = carry.len() as u8;
        Some(upcaser)
    }
}

/// One-shot transform of a whole message (a UDP datagram), appended to
/// `out`. Same bytes as a fresh [`Upcaser`] fed `input` and then finished.
pub fn upcase_into(mode: Mode, input: &[u8], out: &mut Vec<u8>) {
    upcase_into_at(Level::best(), mode, input, out);
}

/// [`upcase_into`] with the implementation `level` (the portable one if
/// this CPU cannot run it): for tests and benchmarks.
pub fn upcase_into_at(level: Level, mode: Mode, input: &[u8], out: &mut Vec<u8>) {
    match mode {
        Mode::Ascii => ascii_mode_at(level, input, out),
        Mode::Unicode => {
            out.reserve(input.len());
            let tail = unicode_body(level, input, out);
            // A message is complete, so a truncated final char is invalid.
            out.extend_from_slice(&input[input.len() - tail..]);
        }
    }
}

/// Convenience: one-shot transform into a new `Vec`.
pub fn upcase(mode: Mode, input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    upcase_into(mode, input, &mut out);
    out
}

/// The definition of unicode mode, written plainly with std and slow:
/// split with `utf8_chunks`, upper-case the valid chunks with
/// `str::to_uppercase`, copy the invalid ones. What the tests, the fuzz
/// target and the benchmarks check every level against.
pub fn definition(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in input.utf8_chunks() {
        out.extend_from_slice(chunk.valid().to_uppercase().as_bytes());
        out.extend_from_slice(chunk.invalid());
    }
    out
}

/// Ascii mode: byte-wise, appended in one go. `extend` over a mapped slice
/// iterator knows its exact length, reserves once and compiles to a
/// vectorized loop.
fn ascii_into(input: &[u8], out: &mut Vec<u8>) {
    out.reserve(input.len());
    out.extend(input.iter().map(|&b| upcase_ascii_byte(b)));
}

/// Ascii mode at `level`: AVX2's 32-byte blocks for a piece of one block
/// or more, where the CPU has it; else [`ascii_into`].
#[inline]
fn ascii_mode_at(level: Level, input: &[u8], out: &mut Vec<u8>) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `best` is Avx2 only when the CPU has AVX2.
    if level == Level::Avx2
        && Level::best() == Level::Avx2
        && unsafe { x86::ascii_mode(input, out) }
    {
        return;
    }
    ascii_into(input, out);
}

/// Unicode mode over one piece: appends the transform of `input` except a
/// trailing valid-but-incomplete sequence, whose length (0..=3) is returned
/// for the caller to carry (streaming) or copy unchanged (one-shot).
fn unicode_body(level: Level, input: &[u8], out: &mut Vec<u8>) -> usize {
    #[cfg(target_arch = "x86_64")]
    if level == Level::Avx2 && Level::best() == Level::Avx2 && input.len() >= 32 {
        // ASCII text, most requests, block by block with nothing to set
        // up; the body only from the first block with a non-ASCII byte.
        // SAFETY: `best` is Avx2 only when the CPU has AVX2.
        let done = unsafe { x86::ascii_blocks(input, out) };
        if done == input.len() {
            return 0;
        }
        // SAFETY: as above.
        return unsafe { x86::body(Table::get(), &input[done..], out) };
    }
    // Short all-ASCII pieces (most requests): one vectorized scan, then the
    // same loop as ascii mode. Measured on 64 bytes: 8 ns against 11 ns for
    // the block-wise path.
    if input.len() < LONG && input.is_ascii() {
        ascii_into(input, out);
        return 0;
    }
    let table = Table::get();
    match level {
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 if Level::best() == Level::Avx2 => {
            // SAFETY: `best` is Avx2 only when the CPU has AVX2.
            unsafe { x86::body(table, input, out) }
        }
        _ => portable::body(table, input, out),
    }
}

/// Builds the table the transform looks non-ASCII chars up in, so that
/// the first client to send one does not wait for it (a few milliseconds).
pub fn warm_up(mode: Mode) {
    if mode == Mode::Unicode {
        Table::get();
    }
    Level::best();
}

use portable::{decode, upcase_ascii_byte, Seq, LONG};

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::sample::Index;

    use super::definition as reference;

    /// Unicode mode one-shot, on every level this CPU runs (which must
    /// all agree).
    fn uni(input: &[u8]) -> Vec<u8> {
        let mut first: Option<Vec<u8>> = None;
        for level in Level::available() {
            let mut out = Vec::new();
            upcase_into_at(level, Mode::Unicode, input, &mut out);
            match &first {
                None => first = Some(out),
                Some(want) => assert_eq!(&out, want, "{level:?} on {input:02X?}"),
            }
        }
        first.expect("the portable level is always there")
    }

    /// Feeds `pieces` in order to one fresh `Upcaser`, then finishes, on
    /// every level this CPU runs (which must all agree).
    fn stream(mode: Mode, pieces: &[&[u8]]) -> Vec<u8> {
        let mut first: Option<Vec<u8>> = None;
        for level in Level::available() {
            let out = stream_at(level, mode, pieces);
            match &first {
                None => first = Some(out),
                Some(want) => assert_eq!(&out, want, "{level:?}"),
            }
        }
        first.expect("the portable level is always there")
    }

    fn stream_at(level: Level, mode: Mode, pieces: &[&[u8]]) -> Vec<u8> {
        let mut u = Upcaser::new(mode);
        let mut out = Vec::new();
        for piece in pieces {
            // With the room the docs promise is enough, no reallocation.
            out.reserve_exact(max_growth(mode) * (piece.len() + u.carried()) + reserve_slack(mode));
            let capacity = out.capacity();
            u.feed_at(level, piece, &mut out);
            assert_eq!(out.capacity(), capacity, "{level:?} reallocated");
            assert!(u.carried() <= 3);
            if mode == Mode::Ascii {
                assert_eq!(u.carried(), 0);
            }
        }
        u.finish(&mut out);
        assert_eq!(u.carried(), 0);
        out
    }

    /// Splits `input` at the given (unsorted, possibly repeated) positions.
    fn split_at_all<'a>(input: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
        let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(input.len())).collect();
        cuts.sort_unstable();
        let mut pieces = Vec::new();
        let mut start = 0;
        for c in cuts {
            pieces.push(&input[start..c]);
            start = c;
        }
        pieces.push(&input[start..]);
        pieces
    }

    fn cuts_from(indices: &[Index], len: usize) -> Vec<usize> {
        indices.iter().map(|i| i.index(len + 1)).collect()
    }

    #[test]
    fn upcaser_is_tiny() {
        assert!(std::mem::size_of::<Upcaser>() <= 8);
    }

    #[test]
    fn mode_is_kept() {
        assert_eq!(Upcaser::new(Mode::Ascii).mode(), Mode::Ascii);
        assert_eq!(Upcaser::new(Mode::Unicode).mode(), Mode::Unicode);
    }

    #[test]
    fn mode_names_round_trip() {
        for m in [Mode::Ascii, Mode::Unicode] {
            assert_eq!(m.as_str().parse::<Mode>(), Ok(m));
            assert_eq!(m.to_string(), m.as_str());
        }
        assert!("ASCII".parse::<Mode>().is_err());
    }

    #[test]
    fn simple_words() {
        assert_eq!(uni(b"hello"), b"HELLO");
        assert_eq!(uni("straße".as_bytes()), b"STRASSE");
        assert_eq!(uni("é".as_bytes()), "É".as_bytes());
        assert_eq!(uni("ﬁ".as_bytes()), b"FI");
        assert_eq!(uni(b""), b"");
    }

    #[test]
    fn mixed_ascii_and_non_ascii() {
        let input = "Grüße aus Köln, ça va? привет мир 你好 ǆ ΐ 🎉 end\n";
        assert_eq!(uni(input.as_bytes()), input.to_uppercase().as_bytes());
        assert_eq!(uni("héllo wörld".as_bytes()), "HÉLLO WÖRLD".as_bytes());
        // Long ASCII runs around a non-ASCII char exercise the block path.
        let long = format!("{}é{}", "a".repeat(100), "z".repeat(70));
        let want = format!("{}É{}", "A".repeat(100), "Z".repeat(70));
        assert_eq!(uni(long.as_bytes()), want.as_bytes());
    }

    /// Non-ASCII bytes at and around the fast path's block edges (16 and
    /// `LONG`), inside long ASCII runs, fed whole and in two pieces.
    #[test]
    fn ascii_fast_path_block_edges() {
        let positions = (0..40)
            .chain(LONG - 20..LONG + 20)
            .chain(2 * LONG - 3..2 * LONG + 3);
        for pos in positions {
            for insert in [
                &b"\xC3\xA9"[..],
                b"\xFF",
                b"\xE2\x82",
                "\u{1F389}".as_bytes(),
            ] {
                let mut input: Vec<u8> = b"abcdefghijklmnopqrstuvwxyz{|}~0123456789"
                    .iter()
                    .copied()
                    .cycle()
                    .take(2 * LONG + 40)
                    .collect();
                input.splice(pos..pos, insert.iter().copied());
                let want = reference(&input);
                assert_eq!(uni(&input), want, "at {pos}");
                for cut in [pos, pos + 1, pos + insert.len(), LONG, 16] {
                    let (a, b) = input.split_at(cut.min(input.len()));
                    assert_eq!(stream(Mode::Unicode, &[a, b]), want, "at {pos} cut {cut}");
                }
            }
        }
    }

    /// Short pieces, as most requests are: every length up to a few
    /// 32-byte blocks, all ASCII or with one non-ASCII char anywhere (the
    /// AVX2 level's ASCII blocks, their overlapping last block, and the
    /// hand-over to the body), appended to a buffer that already holds
    /// bytes, at every level.
    #[test]
    fn short_pieces_at_every_length() {
        let text = b"the quick brown fox jumps over the lazy dog `{@[ 0123456789";
        let inserts: [&[u8]; 3] = [b"\xC3\xA9", "\u{1F389}".as_bytes(), b"\xFF"];
        for level in Level::available() {
            for len in 0..=140 {
                let ascii: Vec<u8> = text.iter().copied().cycle().take(len).collect();
                let mut cases = vec![ascii.clone()];
                for pos in 0..=len {
                    for insert in inserts {
                        let mut case = ascii.clone();
                        case.splice(pos..pos, insert.iter().copied());
                        cases.push(case);
                    }
                }
                for case in cases {
                    let mut out = b"held".to_vec();
                    let mut u = Upcaser::new(Mode::Unicode);
                    u.feed_at(level, &case, &mut out);
                    u.finish(&mut out);
                    let mut want = b"held".to_vec();
                    want.extend_from_slice(&reference(&case));
                    assert_eq!(out, want, "{level:?}, {case:?}");
                    // And through `feed`, which takes ASCII blocks itself.
                    let mut out = b"held".to_vec();
                    let mut u = Upcaser::new(Mode::Unicode);
                    u.feed(&case, &mut out);
                    u.finish(&mut out);
                    assert_eq!(out, want, "feed, {case:?}");
                }
            }
        }
    }

    /// Ascii mode at every length up to a few 32-byte blocks (the AVX2
    /// level's blocks and their overlapping last one), on bytes of every
    /// value, appended to a buffer that already holds bytes, at every level.
    #[test]
    fn ascii_mode_at_every_length() {
        let bytes: Vec<u8> = (0..=255u8)
            .rev()
            .chain(b"abcxyz`{@[".iter().copied())
            .collect();
        for level in Level::available() {
            for len in 0..=140 {
                for offset in [0, 7, 100] {
                    let case: Vec<u8> = bytes
                        .iter()
                        .copied()
                        .cycle()
                        .skip(offset)
                        .take(len)
                        .collect();
                    let mut out = b"held".to_vec();
                    let mut u = Upcaser::new(Mode::Ascii);
                    u.feed_at(level, &case, &mut out);
                    let mut want = b"held".to_vec();
                    want.extend(case.iter().map(|b| b.to_ascii_uppercase()));
                    assert_eq!(out, want, "{level:?}, {case:?}");
                    let mut out = b"held".to_vec();
                    upcase_into_at(level, Mode::Ascii, &case, &mut out);
                    assert_eq!(out, want, "upcase_into_at {level:?}, {case:?}");
                }
            }
        }
    }

    #[test]
    fn invalid_bytes_pass_through() {
        let cases: &[&[u8]] = &[
            &[0xFF],
            &[0xC0, 0x80],
            &[0xC1, 0xBF],
            &[0x80],
            &[0xED, 0xA0, 0x80],
            &[0xE0, 0x80, 0x80],
            &[0xF0, 0x80, 0x80, 0x80],
            &[0xF4, 0x90, 0x80, 0x80],
            &[0xF5, 0x80, 0x80, 0x80],
            &[0xE2, 0x82],
            &[0xF0, 0x9F, 0x98],
        ];
        for &case in cases {
            assert_eq!(uni(case), case, "{case:02X?}");
            assert_eq!(reference(case), case, "{case:02X?}");
        }
        // Invalid bytes do not disturb their valid neighbours.
        assert_eq!(uni(b"a\xFFb\xC3\xA9\xE2\x82"), b"A\xFFB\xC3\x89\xE2\x82");
        // A broken sequence does not swallow the byte that broke it.
        assert_eq!(uni(b"\xE2\x82a"), b"\xE2\x82A");
        assert_eq!(uni(b"\xE2\xC3\xA9"), b"\xE2\xC3\x89");
    }

    /// Every char, alone and between ASCII neighbours, against std: the
    /// lookup table and the caseless-block copies must agree with
    /// `to_uppercase` everywhere, not just where proptest happens to look.
    #[test]
    fn every_char_matches_std() {
        let mut input = Vec::new();
        let mut want = Vec::new();
        for ch in (0..=0x10_FFFF).filter_map(char::from_u32) {
            input.clear();
            want.clear();
            let mut buf = [0; 4];
            input.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
            want.extend_from_slice(ch.to_uppercase().to_string().as_bytes());
            assert_eq!(uni(&input), want, "U+{:04X}", u32::from(ch));
            input.push(b'x');
            want.push(b'X');
            assert_eq!(uni(&input), want, "U+{:04X} then x", u32::from(ch));
        }
    }

    /// Every lead byte (and every byte that is not one) followed by every
    /// second byte and a spread of third and fourth ones, inside a long
    /// piece so that the main loop's fast steps see it (a short piece goes
    /// to the tail's decoder): valid chars, broken ones, overlongs,
    /// surrogates, stray continuation bytes. At several offsets, so that
    /// the sequences sit at every position of the 8- and 16-byte windows,
    /// on every level, one-shot and streamed in 4 KiB reads, against std.
    #[test]
    fn every_two_byte_prefix_in_a_long_piece() {
        const TAILS: [u8; 10] = [0x00, 0x41, 0x61, 0x7F, 0x80, 0x9F, 0xA0, 0xBF, 0xC3, 0xF0];
        let mut body = Vec::new();
        for b0 in 0x80..=0xFFu8 {
            for b1 in 0..=0xFFu8 {
                for (k, &b2) in TAILS.iter().enumerate() {
                    let b3 = TAILS[(k + usize::from(b1)) % TAILS.len()];
                    body.extend_from_slice(&[b0, b1, b2, b3]);
                    if (b1 ^ b2) % 3 == 0 {
                        body.extend_from_slice(b"xyz");
                    }
                }
            }
        }
        for shift in 0..16 {
            let mut text = b"a".repeat(shift);
            text.extend_from_slice(&body);
            let want = reference(&text);
            let pieces: Vec<&[u8]> = text.chunks(4096).collect();
            for level in Level::available() {
                let mut out = Vec::new();
                upcase_into_at(level, Mode::Unicode, &text, &mut out);
                assert!(out == want, "{level:?}, shift {shift}");
                let out = stream_at(level, Mode::Unicode, &pieces);
                assert!(out == want, "{level:?}, shift {shift}, 4 KiB reads");
            }
        }
    }

    /// Every char at every offset from 0 to 63 (so next to every 16-,
    /// 32- and 64-byte block boundary), packed with other chars and ASCII,
    /// on every level, one-shot and streamed in 4 KiB reads that split
    /// chars, against std.
    #[test]
    fn every_char_at_every_block_offset() {
        let mut body = String::new();
        for (k, ch) in (0x80..=0x10_FFFF).filter_map(char::from_u32).enumerate() {
            body.push(ch);
            if k % 5 == 0 {
                body.push('q');
            }
        }
        for shift in 0..64 {
            let text = "a".repeat(shift) + &body;
            let want = text.to_uppercase().into_bytes();
            let pieces: Vec<&[u8]> = text.as_bytes().chunks(4096).collect();
            for level in Level::available() {
                let mut out = Vec::new();
                upcase_into_at(level, Mode::Unicode, text.as_bytes(), &mut out);
                assert!(out == want, "{level:?}, shift {shift}");
                let out = stream_at(level, Mode::Unicode, &pieces);
                assert!(out == want, "{level:?}, shift {shift}, 4 KiB reads");
            }
        }
    }

    /// The AVX2 path's classes flag, or its rules map, the first two bytes
    /// of every char with case (it copies what neither touches).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_classes_cover_every_char_with_case() {
        for ch in (0x80..=0x10_FFFF).filter_map(char::from_u32) {
            if ch.to_uppercase().eq([ch]) {
                continue;
            }
            let mut buf = [0; 4];
            let bytes = ch.encode_utf8(&mut buf).as_bytes();
            let covered =
                x86::flagged(bytes[0], bytes[1]) || x86::ruled(bytes[0], bytes[1]).is_some();
            assert!(covered, "U+{:04X}", u32::from(ch));
        }
    }

    /// The chars the AVX2 level's classes flag and no rule maps (*hard*),
    /// which its blocks hand one by one to a scalar step in place.
    #[cfg(target_arch = "x86_64")]
    fn avx2_hard_chars() -> Vec<char> {
        (0x80..=0x10_FFFF)
            .filter_map(char::from_u32)
            .filter(|ch| {
                let mut buf = [0; 4];
                let b = ch.encode_utf8(&mut buf).as_bytes();
                x86::flagged(b[0], b[1]) && x86::ruled(b[0], b[1]).is_none()
            })
            .collect()
    }

    /// Every hard char at every offset of a 32-byte block (and past it),
    /// among ASCII, ruled and caseless neighbours, followed by another hard
    /// char, at every level, against std.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_hard_chars_at_every_block_offset() {
        let hard = avx2_hard_chars();
        assert!(hard.len() > 500, "{}", hard.len());
        for (k, &ch) in hard.iter().enumerate() {
            let next = hard[(k * 7 + 1) % hard.len()];
            for fill in ["é", "東", "ω"] {
                for offset in 0..36 {
                    let text = format!(
                        "{}{ch}{fill}{next}{next}{}",
                        "a".repeat(offset),
                        fill.repeat(30)
                    );
                    assert_eq!(
                        uni(text.as_bytes()),
                        text.to_uppercase().as_bytes(),
                        "{text}"
                    );
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    proptest! {
        /// Dense mixes of hard chars with ruled, caseless and ASCII ones,
        /// one-shot and streamed at random cuts, against std.
        #[test]
        fn prop_avx2_dense_hard_chars(
            chars in vec(
                prop_oneof![
                    4 => proptest::sample::select(avx2_hard_chars()),
                    2 => proptest::sample::select(vec!['é', 'ß', 'я', 'ω', 'ά', 'ς', 'µ', 'Ά', 'ÿ']),
                    1 => proptest::sample::select(vec!['東', '😀', '\u{5d0}', 'A', 'x', ' ']),
                    1 => any::<char>(),
                ],
                0..300,
            ),
            cuts in vec(any::<Index>(), 0..6),
        ) {
            let text: String = chars.into_iter().collect();
            check_valid_text(&text, &cuts)?;
        }
    }

    /// Text that turns from Greek to chars of the other set of rules that
    /// no class flags (а..п, µ), at every offset: a version that tried
    /// Greek's set alone on Greek text left these lower case.
    #[test]
    fn greek_then_unflagged_cyrillic_and_micro() {
        for shift in 0..40 {
            for tail in ["абвгдежзийклмноп", "µ µµ µ", "ώ а µ ς"] {
                let text = "a".repeat(shift) + &"άλφα βήτα ".repeat(20) + &tail.repeat(8);
                assert_eq!(
                    uni(text.as_bytes()),
                    text.to_uppercase().as_bytes(),
                    "{text}"
                );
            }
        }
    }

    /// A block takes Greek's set of rules only for pairs still flagged
    /// hard, so every pair that set maps must be flagged.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_greek_rules_map_only_flagged_pairs() {
        for lead in 0..=255u8 {
            for next in 0..=255u8 {
                if x86::rule_bits(lead, next).0 != 0 {
                    assert!(x86::flagged(lead, next), "{lead:02X} {next:02X}");
                }
            }
        }
    }

    /// Every pair an AVX2 rule maps is a 2-byte char whose upper case is
    /// exactly the rule's moves away, and no rule touches anything else.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_rules_map_exactly() {
        let mut mapped = 0;
        for lead in 0..=255u8 {
            for next in 0..=255u8 {
                let Some((dl, dn)) = x86::ruled(lead, next) else {
                    continue;
                };
                let s = std::str::from_utf8(&[lead, next])
                    .expect("a ruled pair is a char")
                    .to_owned();
                let want = [lead.wrapping_add(dl as u8), next.wrapping_add(dn as u8)];
                assert_eq!(s.to_uppercase().as_bytes(), want, "{lead:02X} {next:02X}");
                mapped += 1;
            }
        }
        assert!(mapped > 100);
    }

    /// Text in scripts the table serves (2-byte Cyrillic and Greek, caseless
    /// CJK, 4-byte emoji) and the chars it must hand to `to_uppercase`.
    #[test]
    fn scripts_through_the_table() {
        let text = "Съешь же ещё, αβγ ς; 我能吞下玻璃 😀 ß ŉ ǅ ɐ ﬀ ᾳ".as_bytes();
        assert_eq!(uni(text), reference(text));
        assert_eq!(uni("Съешь ß ﬀ".as_bytes()), "СЪЕШЬ SS FF".as_bytes());
    }

    #[test]
    fn ascii_mode_maps_only_a_to_z() {
        assert_eq!(
            upcase(Mode::Ascii, b"hello, World! 09`{@["),
            b"HELLO, WORLD! 09`{@["
        );
        let input = "éß straße".as_bytes();
        let out = upcase(Mode::Ascii, input);
        assert_eq!(out, "éß STRAßE".as_bytes());
        assert_eq!(out.len(), input.len());
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(upcase(Mode::Ascii, &all), all.to_ascii_uppercase());
    }

    #[test]
    fn upcase_into_appends() {
        let mut out = b"> ".to_vec();
        upcase_into(Mode::Unicode, "ß\n".as_bytes(), &mut out);
        upcase_into(Mode::Ascii, b"ab", &mut out);
        assert_eq!(out, b"> SS\nAB");
    }

    #[test]
    fn char_split_across_feeds() {
        assert_eq!(stream(Mode::Unicode, &[b"\xC3", b"\xA9"]), "É".as_bytes());
        let emoji = "🎉".as_bytes();
        for cut in 1..4 {
            let (a, b) = emoji.split_at(cut);
            assert_eq!(stream(Mode::Unicode, &[a, b]), emoji, "cut at {cut}");
        }
        // Upper-casing 4-byte chars across every split: 𐐨 (U+10428) -> 𐐀.
        let deseret = "𐐨".as_bytes();
        for cut in 1..4 {
            let (a, b) = deseret.split_at(cut);
            assert_eq!(stream(Mode::Unicode, &[a, b]), "𐐀".as_bytes());
        }
        // One byte per feed.
        let text = "aé€𐐨ß";
        let pieces: Vec<&[u8]> = text.as_bytes().chunks(1).collect();
        assert_eq!(
            stream(Mode::Unicode, &pieces),
            text.to_uppercase().as_bytes()
        );
    }

    #[test]
    fn carried_reports_pending_bytes() {
        let mut u = Upcaser::new(Mode::Unicode);
        let mut out = Vec::new();
        assert_eq!(u.carried(), 0);
        u.feed(b"x\xF0", &mut out);
        assert_eq!((u.carried(), out.as_slice()), (1, &b"X"[..]));
        // 𐐨 is F0 90 90 A8.
        u.feed(b"\x90", &mut out);
        assert_eq!(u.carried(), 2);
        u.feed(b"", &mut out);
        assert_eq!(u.carried(), 2);
        u.feed(b"\x90", &mut out);
        assert_eq!(u.carried(), 3);
        assert_eq!(out, b"X");
        u.feed(b"\xA8", &mut out);
        assert_eq!(u.carried(), 0);
        assert_eq!(out, "X𐐀".as_bytes());
        // Ascii mode never carries.
        let mut a = Upcaser::new(Mode::Ascii);
        a.feed(b"\xF0\x90", &mut out);
        assert_eq!(a.carried(), 0);
    }

    #[test]
    fn carry_broken_by_ascii() {
        let mut u = Upcaser::new(Mode::Unicode);
        let mut out = Vec::new();
        u.feed(b"\xE2\x82", &mut out);
        assert_eq!(u.carried(), 2);
        assert!(out.is_empty());
        u.feed(b"ab", &mut out);
        assert_eq!(u.carried(), 0);
        assert_eq!(out, b"\xE2\x82AB");
    }

    #[test]
    fn carry_broken_by_other_sequences() {
        // Broken by a new lead byte: the carry is invalid, the new char is not.
        assert_eq!(
            stream(Mode::Unicode, &[b"\xE2", b"\xC3\xA9"]),
            b"\xE2\xC3\x89"
        );
        // Continued validly, then broken: the invalid run includes the
        // continuation byte from the second piece but not the breaker.
        assert_eq!(stream(Mode::Unicode, &[b"\xF0", b"\x9Fz"]), b"\xF0\x9FZ");
        // A continuation byte outside the lead's allowed range breaks it.
        assert_eq!(
            stream(Mode::Unicode, &[b"\xED", b"\xA0\x80"]),
            b"\xED\xA0\x80"
        );
        assert_eq!(stream(Mode::Unicode, &[b"\xE0", b"\x80a"]), b"\xE0\x80A");
        assert_eq!(stream(Mode::Unicode, &[b"\xF4", b"\x90"]), b"\xF4\x90");
        // Bytes that are never a valid tail are not carried at all.
        for b in [0x80u8, 0xBF, 0xC0, 0xC1, 0xF5, 0xFF] {
            let mut u = Upcaser::new(Mode::Unicode);
            let mut out = Vec::new();
            u.feed(&[b], &mut out);
            assert_eq!((u.carried(), out), (0, vec![b]), "{b:02X}");
        }
        // A valid incomplete prefix is carried, an impossible one is not.
        let mut u = Upcaser::new(Mode::Unicode);
        let mut out = Vec::new();
        u.feed(b"\xED\x9F", &mut out);
        assert_eq!(u.carried(), 2);
        u.finish(&mut out);
        u.feed(b"\xED\xA0", &mut out);
        assert_eq!(u.carried(), 0);
        assert_eq!(out, b"\xED\x9F\xED\xA0");
    }

    #[test]
    fn finish_flushes_incomplete_tail() {
        let mut u = Upcaser::new(Mode::Unicode);
        let mut out = Vec::new();
        u.feed(b"ok \xF0\x9F\x98", &mut out);
        assert_eq!(out, b"OK ");
        assert_eq!(u.carried(), 3);
        u.finish(&mut out);
        assert_eq!(out, b"OK \xF0\x9F\x98");
        assert_eq!(u.carried(), 0);
        // After finish the next feed starts a fresh stream.
        u.feed("é".as_bytes(), &mut out);
        u.finish(&mut out);
        let mut want = b"OK \xF0\x9F\x98".to_vec();
        want.extend_from_slice("É".as_bytes());
        assert_eq!(out, want);
    }

    /// `max_growth` is the ceiling of the worst bytes-out / bytes-in ratio
    /// over every char, and no char exceeds it.
    #[test]
    fn max_growth_matches_scan_of_all_chars() {
        let mut worst = (0usize, 1usize); // (out, in) as a fraction
        for ch in (0..=0x10FFFFu32).filter_map(char::from_u32) {
            let out: usize = ch.to_uppercase().map(char::len_utf8).sum();
            let inp = ch.len_utf8();
            if out * worst.1 > worst.0 * inp {
                worst = (out, inp);
            }
        }
        assert_eq!(worst.0.div_ceil(worst.1), max_growth(Mode::Unicode));
        assert_eq!(max_growth(Mode::Ascii), 1);
    }

    /// The hand-written decoder agrees with std on every lead and second
    /// byte, followed by a spread of third and fourth bytes.
    #[test]
    fn decode_agrees_with_std() {
        let tails = [
            0x00u8, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xF5, 0xFF,
        ];
        for b0 in 0..=255u8 {
            for b1 in 0..=255u8 {
                for &b2 in &tails {
                    for &b3 in &tails {
                        let buf = [b0, b1, b2, b3];
                        for len in 1..=4 {
                            let w = &buf[..len];
                            let want = match std::str::from_utf8(w) {
                                Ok(s) => {
                                    let ch = s.chars().next().unwrap();
                                    Seq::Char(ch, ch.len_utf8())
                                }
                                Err(e) if e.valid_up_to() > 0 => {
                                    let s = std::str::from_utf8(&w[..e.valid_up_to()]).unwrap();
                                    let ch = s.chars().next().unwrap();
                                    Seq::Char(ch, ch.len_utf8())
                                }
                                Err(e) => match e.error_len() {
                                    Some(n) => Seq::Invalid(n),
                                    None => Seq::Incomplete,
                                },
                            };
                            assert_eq!(decode(w), want, "{w:02X?}");
                        }
                    }
                }
            }
        }
    }

    /// Every sequence of up to 4 bytes from a set of interesting bytes, fed
    /// in 1, 2 or 3 pieces at every combination of split points, equals the
    /// reference. Length 4 covers every 3-byte sequence preceded or followed
    /// by another byte.
    #[test]
    fn exhaustive_small_sequences() {
        const SET: [u8; 25] = [
            0x00, 0x41, 0x61, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xC3,
            0xDF, 0xE0, 0xE1, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF4, 0xF5, 0xFF,
        ];
        let mut buf = Vec::with_capacity(4);
        for len in 1..=4u32 {
            for mut n in 0..SET.len().pow(len) {
                buf.clear();
                for _ in 0..len {
                    buf.push(SET[n % SET.len()]);
                    n /= SET.len();
                }
                let want = reference(&buf);
                assert_eq!(uni(&buf), want, "{buf:02X?}");
                for i in 0..=buf.len() {
                    for j in i..=buf.len() {
                        let pieces = [&buf[..i], &buf[i..j], &buf[j..]];
                        assert_eq!(
                            stream(Mode::Unicode, &pieces),
                            want,
                            "{buf:02X?} split at {i},{j}"
                        );
                    }
                }
            }
        }
    }

    /// Byte soup that hits the interesting cases often: valid chars of every
    /// length, truncated chars, stray continuation and never-valid bytes.
    fn tricky_bytes() -> impl Strategy<Value = Vec<u8>> {
        let token = prop_oneof![
            3 => vec(any::<u8>(), 1..4),
            3 => vec(0x80u8..=0xFF, 1..4),
            3 => any::<char>().prop_map(|c| c.to_string().into_bytes()),
            2 => proptest::char::range('\u{80}', '\u{7FF}').prop_map(|c| c.to_string().into_bytes()),
            2 => (any::<char>(), any::<Index>()).prop_map(|(c, i)| {
                let bytes = c.to_string().into_bytes();
                let keep = i.index(bytes.len());
                bytes[..keep.max(1)].to_vec()
            }),
            2 => "[a-zA-Z0-9 ]{1,40}".prop_map(String::into_bytes),
            1 => Just(vec![0xED, 0xA0, 0x80]),
            1 => Just(vec![0xF4, 0x90, 0x80, 0x80]),
            1 => Just(vec![0xE0, 0x80, 0x80]),
        ];
        vec(token, 0..40).prop_map(|tokens| tokens.concat())
    }

    /// Valid text: one-shot and streamed at the cuts both equal std's
    /// `str::to_uppercase`.
    fn check_valid_text(text: &str, cuts: &[Index]) -> Result<(), TestCaseError> {
        let bytes = text.as_bytes();
        let want = text.to_uppercase().into_bytes();
        prop_assert_eq!(&uni(bytes), &want);
        let pieces = split_at_all(bytes, &cuts_from(cuts, bytes.len()));
        prop_assert_eq!(&stream(Mode::Unicode, &pieces), &want);
        Ok(())
    }

    proptest! {
        #[test]
        fn prop_valid_text(text in any::<String>(), cuts in vec(any::<Index>(), 0..8)) {
            check_valid_text(&text, &cuts)?;
        }

        #[test]
        fn prop_printable_text(text in "\\PC*", cuts in vec(any::<Index>(), 0..8)) {
            check_valid_text(&text, &cuts)?;
        }

        #[test]
        fn prop_arbitrary_bytes(bytes in tricky_bytes(), cuts in vec(any::<Index>(), 0..12)) {
            let one_shot = uni(&bytes);
            prop_assert_eq!(&one_shot, &reference(&bytes));
            let pieces = split_at_all(&bytes, &cuts_from(&cuts, bytes.len()));
            prop_assert_eq!(&stream(Mode::Unicode, &pieces), &one_shot);
            // Output never exceeds the documented bound.
            prop_assert!(one_shot.len() <= max_growth(Mode::Unicode) * bytes.len());
        }

        #[test]
        fn prop_ascii_mode(bytes in vec(any::<u8>(), 0..300), cuts in vec(any::<Index>(), 0..8)) {
            let one_shot = upcase(Mode::Ascii, &bytes);
            prop_assert_eq!(one_shot.len(), bytes.len());
            prop_assert_eq!(&one_shot, &bytes.to_ascii_uppercase());
            let pieces = split_at_all(&bytes, &cuts_from(&cuts, bytes.len()));
            prop_assert_eq!(&stream(Mode::Ascii, &pieces), &one_shot);
        }
    }

    /// A stream cut inside a character and resumed in another transformer
    /// (a restart) gives the bytes of the whole stream; a carry `feed`
    /// could never leave is refused.
    #[test]
    fn resume_carries_on_where_feed_stopped_and_refuses_impossible_carries() {
        for input in ["x\u{e4}y", "\u{6771}\u{4eac}", "a\u{1f600}b", "stra\u{df}e"] {
            let bytes = input.as_bytes();
            for cut in 0..=bytes.len() {
                let mut first = Upcaser::new(Mode::Unicode);
                let mut out = Vec::new();
                first.feed(&bytes[..cut], &mut out);
                let mut second = Upcaser::resume(Mode::Unicode, first.carry()).expect("resumable");
                second.feed(&bytes[cut..], &mut out);
                second.finish(&mut out);
                assert_eq!(out, upcase(Mode::Unicode, bytes), "{input:?} cut at {cut}");
            }
        }
        for bad in [
            &b"A"[..],
            b"\xC3A",
            b"\xF0\x9F\x98\x80",
            b"\x80",
            b"\xE1\x80\x80\x80",
        ] {
            assert!(Upcaser::resume(Mode::Unicode, bad).is_none(), "{bad:?}");
        }
        assert!(Upcaser::resume(Mode::Ascii, b"\xC3").is_none());
        assert_eq!(
            Upcaser::resume(Mode::Ascii, b"").map(|u| u.mode()),
            Some(Mode::Ascii)
        );
    }
}
