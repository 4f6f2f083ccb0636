//! The case table: the upper case of every `char`, as UTF-8, built from
//! `char::to_uppercase` itself on first use, so it cannot disagree with it
//! (a test compares every char, and every page against a fresh build).
//!
//! Two levels, by blocks of 64 code points: `page[cp >> 6]` names the
//! block's page of 64 entries, or is 0 when no char of the block changes
//! (most of CJK, Hangul, kana, emoji, Arabic), so the caller copies the
//! char as it is. Only 63 blocks of Unicode 16 have any case at all.

use std::sync::OnceLock;

/// Room for the pages (63 are used today); a power of two, so that the
/// index can be masked instead of bounds-checked.
const PAGES: usize = 128;

/// The 2-byte chars that the AVX2 level's hard step looks up with
/// [`Table::entry2`] (leads C3..D6): every block of them has a page. Not
/// the caseless blocks after them (Hebrew, Arabic): there a page would
/// make the portable step look up what it now copies.
const PAGED_2BYTE: std::ops::Range<u32> = 0xC0..0x5C0;

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

    /// The entry of `cp` in U+00C0..U+05BF (2-byte chars with leads
    /// C3..D6): every such block has a page, so this is one lookup without
    /// a test.
    #[inline(always)]
    pub(super) fn entry2(&self, cp: u32) -> Entry {
        debug_assert!(PAGED_2BYTE.contains(&cp));
        self.entry(self.page(cp), cp)
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
            // Every block of `PAGED_2BYTE` gets a page, caseless or not,
            // so that `entry2` needs no test.
            if !PAGED_2BYTE.contains(&(block * 64)) && chars.clone().all(is_caseless) {
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
        Table { page, pages }
    }
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

    /// Every char's entry (page or copy) is `to_uppercase`'s answer.
    #[test]
    fn every_char_agrees_with_to_uppercase() {
        let table = Table::get();
        for ch in (0..=0x10_FFFF).filter_map(char::from_u32) {
            let entry = table.lookup(ch).to_le_bytes();
            let want = ch.to_uppercase().to_string();
            let len = entry_len(table.lookup(ch));
            assert_eq!(&entry[..len], want.as_bytes(), "U+{:04X}", u32::from(ch));
            if PAGED_2BYTE.contains(&u32::from(ch)) {
                assert_eq!(table.entry2(u32::from(ch)), table.lookup(ch));
            }
        }
    }
}
