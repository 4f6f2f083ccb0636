//! The case table: the upper case of every `char`, as UTF-8, built from
//! `char::to_uppercase` itself on first use, so it cannot disagree with it
//! (a test compares every char, and every page against a fresh build).
//!
//! Two levels, by blocks of 64 code points: `page[cp >> 6]` names the
//! block's page of 64 entries, or is 0 when no char of the block changes
//! (most of CJK, Hangul, kana, emoji, Arabic), so the caller copies the
//! char as it is. Only 63 blocks of Unicode 16 have any case at all.
//!
//! Two more tables serve the portable loop's fast steps, keyed on the
//! first two bytes of a char as they sit in the loop's window (masked, so
//! one AND makes the index):
//!
//! - `pair`: the upper case of every 2-byte sequence (lead `C0`..`DF`, a
//!   continuation byte), when it is 2 bytes too; 0 when it is not (`ı` to
//!   `I`, `ŉ` to `ʼN`, `ɐ` to `Ɐ`, `ΐ`...), for the general step. The
//!   overlongs `C0`/`C1` map to themselves (they are copied as invalid).
//! - `caseless`: for a 3- or 4-byte lead and the byte after it, whether
//!   no char that starts with those two bytes has case (CJK, kana, Hangul
//!   with its `ED` lead, emoji, most punctuation): such a lead and its
//!   continuation bytes are copied as they are. Invalid ones are copied
//!   unchanged too, byte by byte, which is the same bytes.
//!
//! And one for the AVX2 level's hard step: `two`, the entry of every
//! 2-byte sequence in one flat table (16 KiB), so that a 2-byte char no
//! vector rule maps (`ı`, `ŉ`, `ΐ`, `ǅ`) is one load, not two.

use std::sync::OnceLock;

/// Room for the pages (63 are used today); a power of two, so that the
/// index can be masked instead of bounds-checked.
const PAGES: usize = 128;

/// One char's upper case: the UTF-8 bytes (at most 6: `ΐ` becomes three
/// 2-byte chars) in bytes 0..7, little-endian, and their count in byte 7.
/// Written out as one 8-byte store; only the counted bytes are kept.
pub(super) type Entry = u64;

/// The count of output bytes of an entry.
#[inline(always)]
pub(super) fn entry_len(entry: Entry) -> usize {
    (entry >> 56) as usize
}

pub(super) struct Table {
    /// Page number of every 64-code-point block, over the 21-bit space so a
    /// masked index needs no bounds check; 0: the block is caseless.
    page: Box<[u8; 1 << 15]>,
    /// `pages[p][cp % 64]` for the blocks with case.
    pages: Box<[[Entry; 64]; PAGES]>,
    /// The upper case of a 2-byte sequence as its 2 bytes (little-endian),
    /// 0 when it is not 2 bytes long; index: [`pair_index`].
    pair: Box<[u16; PAIR]>,
    /// 1 where no char starting with a 3- or 4-byte lead and the next byte
    /// has case; index: [`caseless_index`].
    caseless: Box<[u8; CASELESS]>,
    /// The entry of every 2-byte sequence (a 2-byte lead and a
    /// continuation byte), flat, for the AVX2 level's hard step; index:
    /// [`two_index`].
    two: Box<[Entry; TWO]>,
}

/// Entries of `two`: every index [`two_index`] makes (16 KiB).
const TWO: usize = 0x800;

/// The index in `two` of the window `w` that starts with a 2-byte lead
/// and a continuation byte: the lead's 5 low bits, then the next byte's
/// 6 (the code point's bits, in another order: no shift of the lead).
#[inline(always)]
fn two_index(w: u32) -> usize {
    (w & 0x1F | (w >> 3) & 0x7E0) as usize
}

/// Entries of `pair`: every index `pair_index` makes (32 KiB, of which a
/// 64-byte line per second byte is used: one AND is the index).
const PAIR: usize = 0x4000;

/// Entries of `caseless`: every index `caseless_index` makes.
const CASELESS: usize = 0x4000;

/// The index in `pair` of the window `w` that starts with a 2-byte lead
/// (`110xxxxx`) and a continuation byte: the lead's 5 low bits and the
/// next byte's 6.
#[inline(always)]
pub(super) fn pair_index(w: u32) -> usize {
    (w & 0x3F1F) as usize
}

/// The index in `caseless` of the window `w` that starts with a 3-byte
/// (`1110xxxx`) or 4-byte (`11110xxx`) lead and a continuation byte: the
/// lead's 5 low bits (which tell the two apart) and the next byte's 6.
#[inline(always)]
pub(super) fn caseless_index(w: u32) -> usize {
    (w & 0x3F1F) as usize
}

impl Table {
    /// The table, built on first use (about 1.1 million `to_uppercase`
    /// calls, once per process; the server builds it before serving).
    pub(super) fn get() -> &'static Table {
        static TABLE: OnceLock<Table> = OnceLock::new();
        TABLE.get_or_init(Table::build)
    }

    /// The page of the block of `cp` (0: caseless, copy the char).
    #[inline(always)]
    pub(super) fn page(&self, cp: u32) -> u8 {
        self.page[(cp >> 6) as usize & 0x7FFF]
    }

    /// The entry of `cp` on page `page` (not 0).
    #[inline(always)]
    pub(super) fn entry(&self, page: u8, cp: u32) -> Entry {
        self.pages[usize::from(page) & (PAGES - 1)][cp as usize & 63]
    }

    /// The upper case of the 2-byte sequence at the start of `w` (a
    /// 2-byte lead and a continuation byte) as 2 bytes, or 0 when it is
    /// not 2 bytes long.
    #[inline(always)]
    pub(super) fn pair(&self, w: u32) -> u16 {
        self.pair[pair_index(w) & (PAIR - 1)]
    }

    /// Whether the sequence at the start of `w` (a 3- or 4-byte lead and
    /// its continuation bytes) is the same bytes in upper case.
    #[inline(always)]
    pub(super) fn caseless(&self, w: u32) -> bool {
        self.caseless[caseless_index(w) & (CASELESS - 1)] != 0
    }

    /// The entry of the 2-byte char at the start of `w` (a 2-byte lead
    /// and a continuation byte): one lookup in a flat table, without the
    /// page step.
    #[inline(always)]
    pub(super) fn entry2(&self, w: u32) -> Entry {
        debug_assert!(w & 0xC0E0 == 0x80C0);
        self.two[two_index(w) & (TWO - 1)]
    }

    /// The upper case of `ch` as its entry, the char itself for caseless blocks.
    pub(super) fn lookup(&self, ch: char) -> Entry {
        let cp = u32::from(ch);
        match self.page(cp) {
            0 => encode_entry(&[ch]),
            p => self.entry(p, cp),
        }
    }

    fn build() -> Table {
        let mut page: Box<[u8; 1 << 15]> = vec![0u8; 1 << 15]
            .into_boxed_slice()
            .try_into()
            .expect("length is 1 << 15");
        let mut pages: Box<[[Entry; 64]; PAGES]> = vec![[0; 64]; PAGES]
            .into_boxed_slice()
            .try_into()
            .expect("length is PAGES");
        let mut used = 0;
        // ASCII is never looked up here (every caller takes it apart), but
        // its blocks get pages like any other so the table is complete.
        for block in 0..0x11_0000 / 64 {
            let chars = (block * 64..block * 64 + 64).filter_map(char::from_u32);
            if chars.clone().all(is_caseless) {
                continue;
            }
            used += 1;
            assert!(used < PAGES, "more than {} blocks with case", PAGES - 1);
            page[block as usize] = used as u8;
            for (k, entry) in pages[used].iter_mut().enumerate() {
                // Surrogates are not chars, but their blocks are caseless.
                let ch = char::from_u32(block * 64 + k as u32).expect("a block with case");
                let up: Vec<char> = ch.to_uppercase().collect();
                *entry = encode_entry(&up);
            }
        }
        let (pair, caseless) = build_fast();
        let mut two: Box<[Entry; TWO]> = vec![0; TWO]
            .into_boxed_slice()
            .try_into()
            .expect("length is TWO");
        for lead in 0xC0..=0xDFu32 {
            for next in 0x80..=0xBFu32 {
                let w = lead | next << 8;
                let cp = (lead & 0x1F) << 6 | next & 0x3F;
                two[two_index(w)] = match char::from_u32(cp) {
                    // The overlongs C0 and C1: never flagged, but every
                    // entry is defined (copied, as the portable step
                    // copies invalid bytes, one at a time).
                    Some(ch) if cp >= 0x80 => {
                        let page = page[(cp >> 6) as usize];
                        if page == 0 {
                            encode_entry(&[ch])
                        } else {
                            pages[usize::from(page)][cp as usize & 63]
                        }
                    }
                    _ => u64::from(lead) | 1 << 56,
                };
            }
        }
        Table {
            page,
            pages,
            pair,
            caseless,
            two,
        }
    }
}

/// The tables of the fast steps, from `to_uppercase`: every entry starts
/// as "copy the bytes" (right for the sequences no char starts with, which
/// are invalid and copied unchanged), then every char of 2 bytes or more
/// writes its own.
#[allow(clippy::type_complexity)]
fn build_fast() -> (Box<[u16; PAIR]>, Box<[u8; CASELESS]>) {
    let mut pair: Box<[u16; PAIR]> = vec![0u16; PAIR]
        .into_boxed_slice()
        .try_into()
        .expect("length is PAIR");
    let mut caseless: Box<[u8; CASELESS]> = vec![1u8; CASELESS]
        .into_boxed_slice()
        .try_into()
        .expect("length is CASELESS");
    for lead in 0xC0..=0xDFu32 {
        for next in 0x80..=0xBFu32 {
            pair[pair_index(lead | next << 8)] = (lead | next << 8) as u16;
        }
    }
    for ch in (0x80..=0x10_FFFF).filter_map(char::from_u32) {
        let mut buf = [0u8; 4];
        let bytes = ch.encode_utf8(&mut buf).as_bytes();
        let w = u32::from(bytes[0]) | u32::from(bytes[1]) << 8;
        if bytes.len() == 2 {
            let up = ch.to_uppercase().to_string();
            pair[pair_index(w)] = match *up.as_bytes() {
                [a, b] => u16::from_le_bytes([a, b]),
                _ => 0,
            };
        } else if !is_caseless(ch) {
            caseless[caseless_index(w)] = 0;
        }
    }
    (pair, caseless)
}

fn is_caseless(ch: char) -> bool {
    let mut up = ch.to_uppercase();
    up.next() == Some(ch) && up.next().is_none()
}

/// The entry whose bytes are the UTF-8 of `chars` (at most 6 bytes).
fn encode_entry(chars: &[char]) -> Entry {
    let mut bytes = [0u8; 8];
    let mut len = 0;
    for ch in chars {
        len += ch.encode_utf8(&mut bytes[len..7]).len();
    }
    bytes[7] = len as u8;
    u64::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::definition as reference;

    /// Every char's entry (page or copy) is `to_uppercase`'s answer.
    #[test]
    fn every_char_agrees_with_to_uppercase() {
        let table = Table::get();
        for ch in (0..=0x10_FFFF).filter_map(char::from_u32) {
            let entry = table.lookup(ch).to_le_bytes();
            let want = ch.to_uppercase().to_string();
            let len = entry_len(table.lookup(ch));
            assert_eq!(&entry[..len], want.as_bytes(), "U+{:04X}", u32::from(ch));
            if (0x80..0x800).contains(&u32::from(ch)) {
                let mut b = [0u8; 4];
                ch.encode_utf8(&mut b);
                assert_eq!(table.entry2(u32::from_le_bytes(b)), table.lookup(ch));
            }
        }
    }

    /// Every 2-byte lead (`C0`..`DF`, the overlongs too) and continuation
    /// byte: a `pair` entry is std's transform of the two bytes, and 0
    /// only where that is not 2 bytes long.
    #[test]
    fn every_pair_agrees_with_std() {
        let table = Table::get();
        let mut sent_on = 0;
        for lead in 0xC0..=0xDFu8 {
            for next in 0x80..=0xBFu8 {
                let w = u32::from_le_bytes([lead, next, 0, 0]);
                let want = reference(&[lead, next]);
                match table.pair(w) {
                    0 => {
                        assert_ne!(want.len(), 2, "{lead:02X} {next:02X}");
                        sent_on += 1;
                    }
                    up => assert_eq!(up.to_le_bytes(), *want, "{lead:02X} {next:02X}"),
                }
            }
        }
        // ı, ſ, ŉ, ǰ, ΐ, ΰ, և and the Latin letters whose capitals are 3
        // bytes (ɐ, ɑ, ɫ...): a few dozen.
        assert!((10..100).contains(&sent_on), "{sent_on} sent on");
    }

    /// Every 3- and 4-byte lead and continuation byte that `caseless`
    /// calls caseless: the lead and every continuation bytes after it are
    /// their own transform (valid chars and invalid runs alike), checked
    /// for every such sequence; and where it does not, some char there has
    /// case.
    #[test]
    fn every_caseless_prefix_agrees_with_std() {
        let table = Table::get();
        let cont = 0x80..=0xBFu8;
        for lead in 0xE0..=0xF7u8 {
            let n = if lead < 0xF0 { 3 } else { 4 };
            for b1 in cont.clone() {
                let w = u32::from_le_bytes([lead, b1, 0x80, 0x80]);
                let mut same = true;
                for b2 in cont.clone() {
                    let tails: Vec<u8> = if n == 3 {
                        vec![0]
                    } else {
                        cont.clone().collect()
                    };
                    for &b3 in &tails {
                        let seq = &[lead, b1, b2, b3][..n];
                        same &= reference(seq) == seq;
                    }
                }
                assert_eq!(table.caseless(w), same, "{lead:02X} {b1:02X}");
            }
        }
        // CJK, kana, Hangul (its `ED` lead too), emoji.
        for s in ["\u{4E2D}", "\u{3042}", "\u{D55C}", "\u{D7A3}", "\u{1F600}"] {
            let b = s.as_bytes();
            assert!(
                table.caseless(u32::from_le_bytes([b[0], b[1], 0x80, 0x80])),
                "{s}"
            );
        }
    }
}
