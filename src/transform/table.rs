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

/// The 64-code-point blocks below U+0800: all of them have pages.
const TWO_BYTE_BLOCKS: u32 = 0x800 / 64;

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

    /// The entry of `cp` below U+0800 (a 2-byte char or ASCII): every such
    /// block has a page, so this is one lookup without a test.
    #[inline(always)]
    pub(super) fn entry2(&self, cp: u32) -> Entry {
        debug_assert!(cp < 0x800);
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
            // Every block of 2-byte chars gets a page, caseless or not, so
            // that `entry2` needs no test (11 pages more).
            if block >= TWO_BYTE_BLOCKS && chars.clone().all(is_caseless) {
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
            if u32::from(ch) < 0x800 {
                assert_eq!(table.entry2(u32::from(ch)), table.lookup(ch));
            }
        }
    }
}
