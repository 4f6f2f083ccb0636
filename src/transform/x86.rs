//! Unicode mode's core with AVX2 (x86_64, chosen at run time): 32 bytes at
//! a time, the ASCII letters upper-cased in the register, and the whole
//! block stored as it is unless it holds the start of a char that may have
//! an upper case.
//!
//! Which chars have case is decided by their first two bytes (for a 2-byte
//! char, the char itself): the pairs are few and gathered in a handful of
//! ranges (Latin, Greek, Cyrillic, Armenian lead bytes C2..D6; a few rows
//! of E1, E2, EA, EF and F0). Each byte and the one after it are looked up
//! by their four nibbles in four 16-entry tables (one `vpshufb` each), in
//! the manner of simdutf's UTF-8 validation, and a pair is flagged when all
//! four agree on one of eight classes ([`CLASSES`], a superset of the pairs
//! with case; a test checks it covers every such char). Everything else is
//! left as it is by the transform whatever it is: CJK, kana, Hangul, emoji,
//! Arabic, Hebrew, punctuation, and bytes that are not UTF-8 at all, which
//! is what makes invalid input as cheap as text. The block's bytes before
//! the first flagged pair are kept; from there the rest of the block goes
//! through the portable step, one char at a time, and the next block starts
//! where that step ended (always at or after a char boundary).

use std::arch::x86_64::*;

use super::portable::{self, load4, step, upcase_ascii_byte, Writer, CHUNK, SLACK};
use super::table::Table;

/// One class of flagged pairs: the lead byte's high and low nibble, the
/// next byte's high and low nibble, each a set (bit n: nibble n). Their
/// product is flagged. Overlap with caseless chars only costs speed.
struct Class {
    lead_hi: u16,
    lead_lo: u16,
    next_hi: u16,
    next_lo: u16,
}

const fn nibbles(list: &[u8]) -> u16 {
    let mut set = 0;
    let mut i = 0;
    while i < list.len() {
        set |= 1 << list[i];
        i += 1;
    }
    set
}

const ANY: u16 = 0xFFFF;
/// A continuation byte's high nibble: 8..B.
const CONT: u16 = nibbles(&[8, 9, 0xA, 0xB]);

/// The pairs that may start a char with case (see the module docs).
const CLASSES: [Class; 8] = [
    // C2..CF + continuation: Latin-1 (µ, à..þ) to Greek. C2 only for µ,
    // but a class of its own would not fit.
    Class {
        lead_hi: nibbles(&[0xC]),
        lead_lo: nibbles(&[2, 3, 4, 5, 6, 7, 8, 9, 0xA, 0xB, 0xC, 0xD, 0xE, 0xF]),
        next_hi: CONT,
        next_lo: ANY,
    },
    // D0..D6: Cyrillic, Armenian (D7.. Hebrew, Arabic: caseless).
    Class {
        lead_hi: nibbles(&[0xD]),
        lead_lo: nibbles(&[0, 1, 2, 3, 4, 5, 6]),
        next_hi: CONT,
        next_lo: ANY,
    },
    // E1 83 (Georgian), E1 8F (Cherokee), E2 85, E2 86 (Roman numerals).
    Class {
        lead_hi: nibbles(&[0xE]),
        lead_lo: nibbles(&[1, 2]),
        next_hi: nibbles(&[8]),
        next_lo: nibbles(&[3, 5, 6, 0xF]),
    },
    // E1 B0..BF (U+1C00..1FFF: Latin and Greek extended), E2 B0..BF
    // (U+2C00..2FFF: Glagolitic, Latin Extended-C, Coptic, Georgian).
    Class {
        lead_hi: nibbles(&[0xE]),
        lead_lo: nibbles(&[1, 2]),
        next_hi: nibbles(&[0xB]),
        next_lo: ANY,
    },
    // E2 93 (circled letters); F0 90, 91, 96, 9E (Deseret, Osage,
    // Vithkuqi, Old Hungarian, Warang Citi, Medefaidrin, Adlam...).
    Class {
        lead_hi: nibbles(&[0xE, 0xF]),
        lead_lo: nibbles(&[0, 2]),
        next_hi: nibbles(&[9]),
        next_lo: nibbles(&[0, 1, 3, 6, 0xE]),
    },
    // EA 99..9F (Cyrillic Extended-B, Latin Extended-D), EA AD, AE (Latin
    // Extended-E, Cherokee small letters); not EA B0.. (Hangul).
    Class {
        lead_hi: nibbles(&[0xE]),
        lead_lo: nibbles(&[0xA]),
        next_hi: nibbles(&[9, 0xA]),
        next_lo: nibbles(&[9, 0xA, 0xB, 0xC, 0xD, 0xE, 0xF]),
    },
    // EF AC: ligatures (ﬀ, ﬁ...).
    Class {
        lead_hi: nibbles(&[0xE]),
        lead_lo: nibbles(&[0xF]),
        next_hi: nibbles(&[0xA]),
        next_lo: nibbles(&[0xC]),
    },
    // EF BD: fullwidth a..z (not EF BC: fullwidth punctuation, common in
    // Chinese and Japanese text).
    Class {
        lead_hi: nibbles(&[0xE]),
        lead_lo: nibbles(&[0xF]),
        next_hi: nibbles(&[0xB]),
        next_lo: nibbles(&[0xD]),
    },
];

/// The 16-entry lookup table of one nibble: bit k of entry n is set when
/// nibble n is in the set `pick(CLASSES[k])`.
const fn lut(pick: u8) -> [u8; 16] {
    let mut t = [0u8; 16];
    let mut k = 0;
    while k < CLASSES.len() {
        let c = &CLASSES[k];
        let set = match pick {
            0 => c.lead_hi,
            1 => c.lead_lo,
            2 => c.next_hi,
            _ => c.next_lo,
        };
        let mut n = 0;
        while n < 16 {
            if set & (1 << n) != 0 {
                t[n] |= 1 << k;
            }
            n += 1;
        }
        k += 1;
    }
    t
}

const LEAD_HI: [u8; 16] = lut(0);
const LEAD_LO: [u8; 16] = lut(1);
const NEXT_HI: [u8; 16] = lut(2);
const NEXT_LO: [u8; 16] = lut(3);

/// Whether the pair (lead, next) is flagged: the scalar twin of the vector
/// lookup, for the test that checks the classes cover every char with case.
#[cfg(test)]
pub(super) fn flagged(lead: u8, next: u8) -> bool {
    LEAD_HI[usize::from(lead >> 4)]
        & LEAD_LO[usize::from(lead & 15)]
        & NEXT_HI[usize::from(next >> 4)]
        & NEXT_LO[usize::from(next & 15)]
        != 0
}

/// Whether this CPU can run [`body`].
pub(super) fn available() -> bool {
    is_x86_feature_detected!("avx2")
}

/// [`portable::body`] with AVX2; same contract.
///
/// # Safety
/// The CPU must support AVX2 ([`available`]).
#[target_feature(enable = "avx2")]
pub(super) unsafe fn body(table: &Table, input: &[u8], out: &mut Vec<u8>) -> usize {
    let len = input.len();
    let mut i = 0;
    // A block needs the byte after it (the pair of its last byte) and,
    // so that every char starting in it ends before the portable rest
    // begins, 3 more: blocks start while 36 bytes are left.
    if len >= 36 {
        let lut = |t: [u8; 16]| {
            let x = _mm_loadu_si128(t.as_ptr().cast());
            _mm256_broadcastsi128_si256(x)
        };
        let (lead_hi, lead_lo) = (lut(LEAD_HI), lut(LEAD_LO));
        let (next_hi, next_lo) = (lut(NEXT_HI), lut(NEXT_LO));
        let nibble = _mm256_set1_epi8(0x0F);
        let bias = _mm256_set1_epi8((0x80u8.wrapping_sub(b'a')) as i8);
        let limit = _mm256_set1_epi8(-128 + 26);
        let case_bit = _mm256_set1_epi8(0x20);
        let last = len - 36;
        while i <= last {
            let end = (i + CHUNK).min(last + 1);
            let mut w = Writer::new(out, 3 * (end - i) + SLACK);
            while i < end {
                let block = &input[i..i + 33];
                let v = _mm256_loadu_si256(block.as_ptr().cast());
                // a..z: (v - 'a') < 26 unsigned, as a signed compare after
                // moving the range to the bottom of i8.
                let lower = _mm256_cmpgt_epi8(limit, _mm256_add_epi8(v, bias));
                let up = _mm256_sub_epi8(v, _mm256_and_si256(lower, case_bit));
                _mm256_storeu_si256(w.end_ptr(32).cast(), up);
                if _mm256_movemask_epi8(v) == 0 {
                    w.advance(32);
                    i += 32;
                    continue;
                }
                let n = _mm256_loadu_si256(block[1..].as_ptr().cast());
                let hi = |x| _mm256_and_si256(_mm256_srli_epi16(x, 4), nibble);
                let class = _mm256_and_si256(
                    _mm256_and_si256(
                        _mm256_shuffle_epi8(lead_hi, hi(v)),
                        _mm256_shuffle_epi8(lead_lo, _mm256_and_si256(v, nibble)),
                    ),
                    _mm256_and_si256(
                        _mm256_shuffle_epi8(next_hi, hi(n)),
                        _mm256_shuffle_epi8(next_lo, _mm256_and_si256(n, nibble)),
                    ),
                );
                let calm = _mm256_movemask_epi8(_mm256_cmpeq_epi8(class, _mm256_setzero_si256()));
                let flags = !(calm as u32);
                if flags == 0 {
                    w.advance(32);
                    i += 32;
                    continue;
                }
                // Keep the block up to the first pair with case, then go
                // char by char to the block's end: where one char has
                // case, its neighbours mostly do too (a Cyrillic word).
                let first = flags.trailing_zeros() as usize;
                w.advance(first);
                let stop = i + 32;
                i += first;
                while i < stop {
                    // i < last + 32 = len - 4: a 4-byte window is there.
                    let word = load4(input, i);
                    if word & 0x80 != 0 {
                        i += step(table, word, &mut w);
                    } else {
                        w.store([upcase_ascii_byte(word as u8)]);
                        w.advance(1);
                        i += 1;
                    }
                }
            }
            w.commit();
        }
    }
    // The rest, and the decision on the carry. It may begin with the
    // continuation bytes of a caseless char (or invalid bytes) that the
    // last block started: the portable path copies them as invalid, which
    // is the same bytes.
    portable::body(table, &input[i..], out)
}
