//! Unicode mode's core without CPU-specific instructions: what every
//! architecture runs, and what the vector paths hand back to for the chars
//! they do not map themselves and for the last bytes of a piece.
//!
//! The loop writes straight into the output's reserved capacity (a
//! [`Writer`]): every step stores a fixed 2, 4 or 8 bytes at once and then
//! advances by the count it means, so a char costs one load of its bytes,
//! one mask test, one table lookup and one store, with one bounds check
//! per step (is there an 8-byte window left?). The tables are keyed on
//! the first two bytes as they are (see `table.rs`): a 2-byte char's upper
//! case is one load, a caseless 3- or 4-byte char (CJK, kana, Hangul,
//! emoji) is copied after one. Reserving per chunk of input, with the
//! worst growth (3 bytes out per byte in, see `max_growth`) plus room for
//! the widest store, is what makes the unchecked stores sound.

use super::table::{entry_len, Entry, Table};

/// Input bytes per reservation: small enough that the worst-case
/// reservation (3x) stays a few KiB over what ASCII text needs.
pub(super) const CHUNK: usize = 1024;

/// Room beyond 3 bytes per input byte that one chunk's stores may touch:
/// a 32-byte vector store, or the scalar steps over the rest of a 32-byte
/// block, from the last position of the chunk.
pub(super) const SLACK: usize = 3 * 36 + 64;

/// Appends to a `Vec<u8>` through raw stores into its spare capacity.
///
/// Sound because every store goes through [`Writer::store`], which
/// requires (and checks in debug builds) that the stored bytes lie within
/// the capacity reserved by [`Writer::new`]; `commit` then sets the length
/// to the bytes actually meant, all of which were written. The start of
/// the buffer is kept as a raw pointer (the vector cannot move while the
/// writer borrows it), so a store is one instruction on registers.
pub(super) struct Writer<'a> {
    out: &'a mut Vec<u8>,
    start: *mut u8,
    len: usize,
}

impl<'a> Writer<'a> {
    /// Reserves room for `need` more bytes.
    #[inline(always)]
    pub(super) fn new(out: &'a mut Vec<u8>, need: usize) -> Writer<'a> {
        out.reserve(need);
        let len = out.len();
        let start = out.as_mut_ptr();
        Writer { out, start, len }
    }

    /// Stores `N` bytes at the current end, without advancing.
    #[inline(always)]
    pub(super) fn store<const N: usize>(&mut self, bytes: [u8; N]) {
        assert_room(self.out, self.len, N);
        // SAFETY: `len + N <= capacity` (the chunk's reservation covers
        // every store of the chunk, see `SLACK`; checked in debug builds).
        unsafe { std::ptr::write_unaligned(self.start.add(self.len).cast::<[u8; N]>(), bytes) };
    }

    /// A raw pointer to the current end, for vector stores of up to `n`
    /// bytes.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub(super) fn end_ptr(&mut self, n: usize) -> *mut u8 {
        assert_room(self.out, self.len, n);
        // SAFETY: in bounds of the allocation (`len <= capacity`).
        unsafe { self.start.add(self.len) }
    }

    /// Keeps `n` of the bytes stored at the end.
    #[inline(always)]
    pub(super) fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// Sets the vector's length to what was kept.
    #[inline(always)]
    pub(super) fn commit(self) {
        debug_assert!(self.len <= self.out.capacity());
        // SAFETY: every byte up to `len` was stored (advance only follows
        // a store at least as long), and `len <= capacity`.
        unsafe { self.out.set_len(self.len) }
    }
}

#[inline(always)]
fn assert_room(out: &Vec<u8>, len: usize, n: usize) {
    debug_assert!(
        len + n <= out.capacity(),
        "store of {n} at {len} over capacity {}",
        out.capacity()
    );
}

/// Upper-cases one byte as ASCII: `a`-`z` to `A`-`Z`, others unchanged.
/// Branch-free so that loops over it vectorize.
#[inline(always)]
pub(super) fn upcase_ascii_byte(b: u8) -> u8 {
    b - (u8::from(b.wrapping_sub(b'a') < 26) << 5)
}

/// ASCII upper case of the bytes of `w` (little-endian) before its first
/// non-ASCII byte; the bytes from that one on come out as garbage (carries
/// run from it towards the later bytes only), and are not kept.
#[inline(always)]
fn upcase_ascii_prefix(w: u64) -> u64 {
    // Bit 7 of each ASCII byte: byte >= 'a', and byte > 'z' (no carry out
    // of an ASCII byte: 0x7F + 0x1F < 0x100).
    let ge_a = w.wrapping_add(0x1F1F_1F1F_1F1F_1F1F);
    let gt_z = w.wrapping_add(0x0505_0505_0505_0505);
    let lower = ge_a & !gt_z & 0x8080_8080_8080_8080;
    w.wrapping_sub(lower >> 2)
}

/// Whether all 16 bytes of `block` (`block.len() >= 16`) are ASCII: one OR of
/// two words, cheap enough for short runs.
#[inline(always)]
pub(super) fn is_ascii16(block: &[u8]) -> bool {
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&block[i..i + 8]);
        u64::from_ne_bytes(w)
    };
    (word(0) | word(8)) & 0x8080_8080_8080_8080 == 0
}

/// Block size of the fused check-and-transform loop for long ASCII runs.
/// Measured: 256 beat 32..128 (per-`extend` overhead) and 1024..4096 (the
/// checked block falls out of L1 before it is transformed).
pub(super) const LONG: usize = 256;

/// Upper-cases the longest all-ASCII prefix of `input` onto `out` and
/// returns its length.
///
/// Long runs go `LONG` bytes at a time: check the block (an OR reduction),
/// then transform it with one `extend`; both loops vectorize and the block is
/// still in L1 for the second. What is left (a short run, or the block
/// holding the first non-ASCII byte) is [`short_ascii_run`].
#[inline]
pub(super) fn ascii_run(input: &[u8], out: &mut Vec<u8>) -> usize {
    let mut n = 0;
    for block in input.chunks_exact(LONG) {
        if block.iter().fold(0u8, |acc, &b| acc | b) >= 0x80 {
            break;
        }
        out.extend(block.iter().map(|&b| upcase_ascii_byte(b)));
        n += LONG;
    }
    n + short_ascii_run(&input[n..], out)
}

/// [`ascii_run`] for a run known to be short: measured 16 bytes at a time,
/// then byte by byte, and transformed with one `extend`. Transforming in
/// small blocks instead was ~10x slower: tiny `extend`s do not vectorize.
#[inline(always)]
fn short_ascii_run(input: &[u8], out: &mut Vec<u8>) -> usize {
    let mut m = 0;
    for block in input.chunks_exact(16) {
        if !is_ascii16(block) {
            break;
        }
        m += 16;
    }
    m += input[m..]
        .iter()
        .position(|&b| b >= 0x80)
        .unwrap_or(input.len() - m);
    out.extend(input[..m].iter().map(|&b| upcase_ascii_byte(b)));
    m
}

/// One step at a non-ASCII byte, with `w` the 4 bytes from it on
/// (little-endian; all 4 are in the input): stores its transform and
/// returns the bytes consumed.
///
/// The common chars take one mask test and one table load: a 2-byte char
/// whose upper case is 2 bytes too (Latin, Greek, Cyrillic, Arabic, ...)
/// through `pair`, a 3- or 4-byte one without case (CJK, kana, Hangul,
/// emoji, punctuation) copied after `caseless`. The rest, and every byte
/// that is not valid UTF-8, go to [`general_step`], out of line: the AVX2
/// level calls this for the few chars its rules do not map.
#[inline(always)]
pub(super) fn step(table: &Table, w: u32, out: &mut Writer<'_>) -> usize {
    step_with(table, w, out, general_step_out_of_line)
}

/// [`step`], with `general` for what the fast steps do not take. The
/// portable loop inlines [`general_step`]: measured, 21.4 instead of 27.5
/// instructions per byte of invalid bytes (most of binary data goes
/// there), the same on text; the AVX2 level's loop is the faster for
/// keeping it out of line.
#[inline(always)]
fn step_with(
    table: &Table,
    w: u32,
    out: &mut Writer<'_>,
    general: impl Fn(&Table, u32) -> (usize, Entry),
) -> usize {
    if w & 0xC0E0 == 0x80C0 {
        // 110xxxxx 10xxxxxx
        let up = table.pair(w);
        if up != 0 {
            out.store(up.to_le_bytes());
            out.advance(2);
            return 2;
        }
    } else if w & 0xC0_C0F0 == 0x80_80E0 {
        // 1110xxxx 10xxxxxx 10xxxxxx
        if table.caseless(w) {
            return copy(w, 3, out);
        }
    } else if w & 0xC0C0_C0F8 == 0x8080_80F0 && table.caseless(w) {
        // 11110xxx 10xxxxxx 10xxxxxx 10xxxxxx
        return copy(w, 4, out);
    }
    let (n, entry) = general(table, w);
    out.store(entry.to_le_bytes());
    out.advance(entry_len(entry));
    n
}

#[inline(never)]
fn general_step_out_of_line(table: &Table, w: u32) -> (usize, Entry) {
    general_step(table, w)
}

/// [`step`] for any bytes: decodes one char (or invalid run) from `w`;
/// returns the bytes consumed and what to store for them, as an entry
/// (free of the writer, so that a call to it leaves the writer in
/// registers).
///
/// A valid char is looked up, or copied when its block is caseless (one
/// store of `w`, whose first 1..=4 bytes are kept). Bytes that are not
/// valid UTF-8 are copied the same way, as many as the Unicode standard's
/// "maximal subpart" rule puts in one invalid run (what `utf8_chunks` and
/// `Utf8Error::error_len` use): the lead and the continuation bytes that
/// were valid so far, not the byte that broke the sequence. The second
/// byte's range depends on the lead (table 3-7 of the standard), which
/// rules out overlongs (`C0`, `C1`, `E0 80..9F`, `F0 80..8F`), surrogates
/// (`ED A0..BF`) and code points above U+10FFFF (`F4 90..`, `F5..FF`).
#[inline(always)]
fn general_step(table: &Table, w: u32) -> (usize, Entry) {
    let b0 = w & 0xFF;
    let b1 = (w >> 8) & 0xFF;
    let cont = |k: u32| (w >> (8 * k)) & 0xC0 == 0x80;
    let (cp, n) = if b0 < 0xC2 {
        // A continuation byte, or C0/C1 (only ever overlong): never a lead.
        return kept(w, 1);
    } else if b0 < 0xE0 {
        if !cont(1) {
            return kept(w, 1);
        }
        ((b0 & 0x1F) << 6 | (b1 & 0x3F), 2)
    } else if b0 < 0xF0 {
        let (lo, hi) = match b0 {
            0xE0 => (0xA0, 0xBF),
            0xED => (0x80, 0x9F),
            _ => (0x80, 0xBF),
        };
        if !(lo..=hi).contains(&b1) {
            return kept(w, 1);
        }
        if !cont(2) {
            return kept(w, 2);
        }
        ((b0 & 0x0F) << 12 | (b1 & 0x3F) << 6 | (w >> 16) & 0x3F, 3)
    } else if b0 < 0xF5 {
        let (lo, hi) = match b0 {
            0xF0 => (0x90, 0xBF),
            0xF4 => (0x80, 0x8F),
            _ => (0x80, 0xBF),
        };
        if !(lo..=hi).contains(&b1) {
            return kept(w, 1);
        }
        if !cont(2) {
            return kept(w, 2);
        }
        if !cont(3) {
            return kept(w, 3);
        }
        let cp = (b0 & 0x07) << 18 | (b1 & 0x3F) << 12 | ((w >> 16) & 0x3F) << 6 | (w >> 24) & 0x3F;
        (cp, 4)
    } else {
        return kept(w, 1);
    };
    match table.page(cp) {
        0 => kept(w, n),
        page => (n, table.entry(page, cp)),
    }
}

/// The first `n` bytes of `w`, as they are: `n` consumed, and the entry
/// that keeps them.
#[inline(always)]
fn kept(w: u32, n: usize) -> (usize, Entry) {
    (n, u64::from(w) | (n as u64) << 56)
}

/// Keeps the first `n` bytes of `w` as they are.
#[inline(always)]
fn copy(w: u32, n: usize, out: &mut Writer<'_>) -> usize {
    out.store(w.to_le_bytes());
    out.advance(n);
    n
}

/// The 4 bytes at `input[i..]` as a little-endian word.
#[inline(always)]
pub(super) fn load4(input: &[u8], i: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&input[i..i + 4]);
    u32::from_le_bytes(w)
}

/// The `N` bytes at `input[i..]`, unchecked.
///
/// # Safety
/// `i + N <= input.len()`.
#[inline(always)]
unsafe fn load_unchecked<const N: usize>(input: &[u8], i: usize) -> [u8; N] {
    debug_assert!(i + N <= input.len());
    // SAFETY: the N bytes are in `input` (the caller's promise).
    unsafe { std::ptr::read_unaligned(input.as_ptr().add(i).cast::<[u8; N]>()) }
}

/// Unicode mode over one piece: appends the transform of `input` except a
/// trailing valid-but-incomplete sequence, whose length (0..=3) is returned
/// for the caller to carry (streaming) or copy unchanged (one-shot).
///
/// The main loop reads an 8-byte window at every step, with one bounds
/// check for it (the loop's own): a non-ASCII byte is one [`step`]; an
/// ASCII one is stored with the ASCII bytes after it, up to 8, upper-cased
/// as one word, and kept up to the first non-ASCII byte (so one space
/// between words costs one step). Where all 8 are ASCII, the run goes on
/// 16 bytes at a time (two words). Pieces that start with a long
/// ASCII run take it in the block loop ([`ascii_run`]) first.
pub(super) fn body(table: &Table, input: &[u8], out: &mut Vec<u8>) -> usize {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let len = input.len();
    let mut i = 0;
    while len - i >= 8 {
        if len - i >= 16 && is_ascii16(&input[i..]) {
            i += ascii_run(&input[i..], out);
            continue;
        }
        let end = (i + CHUNK).min(len - 7);
        // Where a 16-byte block may start: in the chunk, and in `input`.
        let block_end = end.min(len.saturating_sub(15));
        let mut w = Writer::new(out, 3 * (end - i) + SLACK);
        while i < end {
            // SAFETY: i < end <= len - 7.
            let q = u64::from_le_bytes(unsafe { load_unchecked(input, i) });
            if q & 0x80 != 0 {
                i += step_with(table, q as u32, &mut w, general_step);
                continue;
            }
            w.store(upcase_ascii_prefix(q).to_le_bytes());
            let high = q & HIGH;
            if high != 0 {
                // 1..=7: the ASCII bytes before the first non-ASCII one.
                let n = (high.trailing_zeros() / 8) as usize;
                w.advance(n);
                i += n;
                // The char after them, when it is in the window and a
                // fast one: most often a letter after a space, taken here
                // so that the loop's first branch (ASCII or not) does not
                // flip twice per word of Cyrillic or Chinese text (a
                // mispredicted branch each; see changes.md for figures).
                let next = (q >> (8 * n)) as u32;
                if n <= 6 && next & 0xC0E0 == 0x80C0 {
                    let up = table.pair(next);
                    if up != 0 {
                        w.store(up.to_le_bytes());
                        w.advance(2);
                        i += 2;
                    }
                } else if n <= 5 && next & 0xC0_C0F0 == 0x80_80E0 && table.caseless(next) {
                    w.store(next.to_le_bytes());
                    w.advance(3);
                    i += 3;
                }
                continue;
            }
            w.advance(8);
            i += 8;
            // Then 16 bytes at a time while they are ASCII.
            while i < block_end {
                // SAFETY (both): i < block_end <= len - 15.
                let a = u64::from_le_bytes(unsafe { load_unchecked(input, i) });
                let b = u64::from_le_bytes(unsafe { load_unchecked(input, i + 8) });
                if (a | b) & HIGH != 0 {
                    break;
                }
                w.store(upcase_ascii_prefix(a).to_le_bytes());
                w.advance(8);
                w.store(upcase_ascii_prefix(b).to_le_bytes());
                w.advance(8);
                i += 16;
            }
        }
        w.commit();
    }
    // The last 4..=7 bytes: the same steps on a 4-byte window (all that a
    // char needs), ASCII one byte at a time.
    if len - i >= 4 {
        let mut w = Writer::new(out, 3 * 8 + SLACK);
        while len - i >= 4 {
            let word = load4(input, i);
            if word & 0x80 != 0 {
                i += step(table, word, &mut w);
            } else {
                w.store([upcase_ascii_byte(word as u8)]);
                w.advance(1);
                i += 1;
            }
        }
        w.commit();
    }
    tail(table, &input[i..], out)
}

/// The last bytes of a piece (fewer than a step's window), one sequence at
/// a time with [`decode`]: returns the length of a valid but incomplete
/// sequence at the end, which is not output.
pub(super) fn tail(table: &Table, input: &[u8], out: &mut Vec<u8>) -> usize {
    let mut i = 0;
    while i < input.len() {
        match decode(&input[i..]) {
            Seq::Char(ch, n) => {
                push_entry(table.lookup(ch), out);
                i += n;
            }
            Seq::Invalid(n) => {
                out.extend_from_slice(&input[i..i + n]);
                i += n;
            }
            Seq::Incomplete => return input.len() - i,
        }
    }
    0
}

/// Appends the bytes of `entry`.
pub(super) fn push_entry(entry: super::table::Entry, out: &mut Vec<u8>) {
    out.extend_from_slice(&entry.to_le_bytes()[..entry_len(entry)]);
}

/// What the UTF-8 sequence at the start of a slice is.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Seq {
    /// A valid char and its encoded length.
    Char(char, usize),
    /// An invalid run of this many bytes (1..=3), to be copied unchanged;
    /// decoding resumes right after it. This is the "maximal subpart" rule
    /// that `utf8_chunks` and `Utf8Error::error_len` use.
    Invalid(usize),
    /// The slice ends inside a sequence that is valid so far.
    Incomplete,
}

/// Decodes the UTF-8 sequence at the start of `bytes` (non-empty), reading at
/// most 4 bytes, by the same rules as [`step`], and says when the slice
/// ends too early to decide.
pub(super) fn decode(bytes: &[u8]) -> Seq {
    let b0 = bytes[0];
    // (sequence length, allowed range of the second byte)
    let (len, lo, hi) = match b0 {
        0x00..=0x7F => return Seq::Char(char::from(b0), 1),
        0xC2..=0xDF => (2, 0x80, 0xBF),
        0xE0 => (3, 0xA0, 0xBF),
        0xE1..=0xEC | 0xEE..=0xEF => (3, 0x80, 0xBF),
        0xED => (3, 0x80, 0x9F),
        0xF0 => (4, 0x90, 0xBF),
        0xF1..=0xF3 => (4, 0x80, 0xBF),
        0xF4 => (4, 0x80, 0x8F),
        // Continuation bytes, C0, C1, F5..FF: never valid as a lead.
        _ => return Seq::Invalid(1),
    };
    let mut cp = u32::from(b0 & (0x7F >> len));
    for k in 1..len {
        let Some(&b) = bytes.get(k) else {
            return Seq::Incomplete;
        };
        let (lo, hi) = if k == 1 { (lo, hi) } else { (0x80, 0xBF) };
        if !(lo..=hi).contains(&b) {
            return Seq::Invalid(k);
        }
        cp = (cp << 6) | u32::from(b & 0x3F);
    }
    // The ranges above admit only scalar values, so this is always `Some`;
    // the fallback just avoids a panic path.
    char::from_u32(cp).map_or(Seq::Invalid(1), |ch| Seq::Char(ch, len))
}
