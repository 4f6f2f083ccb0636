//! Unicode mode's core with AVX2 (x86_64, chosen at run time): 32 bytes at
//! a time, the ASCII letters upper-cased in the register, and the whole
//! block stored at once unless it holds a char that the register cannot map.
//!
//! Which chars have case is decided by their first two bytes (for a 2-byte
//! char, the char itself): the pairs are few and gathered in a handful of
//! ranges (Latin, Greek, Cyrillic, Armenian lead bytes C2..D6; a few rows
//! of E1, E2, EA, EF and F0). Each byte and the one after it are looked up
//! by their four nibbles in four 16-entry tables (one `vpshufb` each), in
//! the manner of simdutf's UTF-8 validation, and a pair belongs to one of
//! eight sets when all four agree on its bit. Two such lookups run side by
//! side:
//!
//! - [`RULES`]: 2-byte chars whose upper case is two bytes that are the
//!   char's moved by fixed amounts (а..я, ѐ..џ, α..ω and the accented
//!   vowels, à..þ, µ, ß -> SS). The moves are added in the register: the
//!   lead's by the pair's rules, the next byte's by the rules of the pair
//!   before it.
//! - [`CLASSES`]: every other pair that may have case (a test checks the
//!   two cover every char with case). Such a char is *hard*.
//!
//! Everything else is left as it is by the transform whatever it is: CJK,
//! kana, Hangul, emoji, Arabic, Hebrew, upper-case Cyrillic, punctuation,
//! and bytes that are not UTF-8 at all, which is what makes invalid input
//! nearly as cheap as text. A block is kept whole (less its last byte
//! when that is the lead of a ruled pair, so the next block starts at that
//! lead); each hard char in it goes through a scalar step where it is, and
//! the mapped bytes after it follow the step's output (a hard char may
//! change length). A block that ends inside a hard char ends after it
//! (always at a char boundary).

use std::arch::x86_64::*;

use super::portable::{self, step, Writer, CHUNK, SLACK};
use super::table::{entry_len, Table};

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
    // C3..CF + continuation: Latin-1 (à..þ) to Greek. Not C2: its only
    // char with case, µ, is mapped by a rule, and « » are C2 AB, C2 BB.
    Class {
        lead_hi: nibbles(&[0xC]),
        lead_lo: nibbles(&[3, 4, 5, 6, 7, 8, 9, 0xA, 0xB, 0xC, 0xD, 0xE, 0xF]),
        next_hi: CONT,
        next_lo: ANY,
    },
    // D1..D6: Cyrillic, Armenian (D7.. Hebrew, Arabic: caseless). Not
    // D0: А..Я (D0 90..AF) are upper case already and а..п (D0 B0..BF)
    // are mapped by a rule.
    Class {
        lead_hi: nibbles(&[0xD]),
        lead_lo: nibbles(&[1, 2, 3, 4, 5, 6]),
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
/// nibble n is in the set `pick(classes[k])`.
const fn lut(classes: &[Class], pick: u8) -> [u8; 16] {
    let mut t = [0u8; 16];
    let mut k = 0;
    while k < classes.len() {
        let c = &classes[k];
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

const LEAD_HI: [u8; 16] = lut(&CLASSES, 0);
const LEAD_LO: [u8; 16] = lut(&CLASSES, 1);
const NEXT_HI: [u8; 16] = lut(&CLASSES, 2);
const NEXT_LO: [u8; 16] = lut(&CLASSES, 3);

// No class flags a continuation byte (high nibble 8..B), nor an ASCII one:
// `body`'s hard loop relies on it for `from <= at` (the run between two
// hard chars is `at - from` bytes long, read from `spill` at `from`), so
// it is checked when this compiles, not only in debug builds.
const _: () = {
    let mut n = 0;
    while n < 12 {
        assert!(
            LEAD_HI[n] == 0,
            "a class flags a continuation or ASCII byte"
        );
        n += 1;
    }
};

/// A 2-byte char whose upper case is a 2-byte char at a fixed distance in
/// UTF-8: its lead byte moves by `lead`, its second byte by `next`. These
/// are mapped in the register, so most Cyrillic, Greek and Latin-1 text
/// never leaves the vector loop.
struct Rule {
    pairs: Class,
    lead: i8,
    next: i8,
}

const fn two_byte(lead: u8, next_hi: &[u8], next_lo: u16) -> Class {
    Class {
        lead_hi: 1 << (lead >> 4),
        lead_lo: 1 << (lead & 15),
        next_hi: nibbles(next_hi),
        next_lo,
    }
}

/// The rules, two sets of eight (one bit each). Where rules overlap, their
/// moves add up: a rule can correct another on a few of its pairs (`ß`
/// within the Latin-1 capitals that stay), which the nibble products alone
/// could not cut out. The first set (Latin-1, Cyrillic) is looked up for
/// a block with one of its leads (C2, C3, D0, D1); the second (Greek) for
/// a block where pairs are still hard, so every pair it maps is flagged
/// (a test checks). Chars left out (`÷`, `ǅ`, `ΐ`, `Π`, `ґ`...) are flagged
/// by [`CLASSES`] and taken by the scalar step.
const RULES: [Rule; 16] = [
    // à..þ (C3 A0..BF) -> À..Þ, but not ç/ï (next rule), ÷ (C3 B7), ÿ (C3 BF).
    Rule {
        pairs: two_byte(0xC3, &[0xA, 0xB], ANY & !nibbles(&[7, 0xF])),
        lead: 0,
        next: -0x20,
    },
    // ç, ï (C3 A7, C3 AF).
    Rule {
        pairs: two_byte(0xC3, &[0xA], nibbles(&[7, 0xF])),
        lead: 0,
        next: -0x20,
    },
    // Latin-1 upper case, C3 80..9F: stays (moves of 0, so it is not
    // hard), but for ß (next rule).
    Rule {
        pairs: two_byte(0xC3, &[8, 9], ANY),
        lead: 0,
        next: 0,
    },
    // ß (C3 9F) -> SS (53 53), over the rule before.
    Rule {
        pairs: two_byte(0xC3, &[9], nibbles(&[0xF])),
        lead: 0x53u8.wrapping_sub(0xC3) as i8,
        next: 0x53u8.wrapping_sub(0x9F) as i8,
    },
    // а..п (D0 B0..BF) -> А..П.
    Rule {
        pairs: two_byte(0xD0, &[0xB], ANY),
        lead: 0,
        next: -0x20,
    },
    // р..я (D1 80..8F) -> Р..Я (D0 A0..AF).
    Rule {
        pairs: two_byte(0xD1, &[8], ANY),
        lead: -1,
        next: 0x20,
    },
    // ѐ..џ (D1 90..9F) -> Ѐ..Џ (D0 80..8F).
    Rule {
        pairs: two_byte(0xD1, &[9], ANY),
        lead: -1,
        next: -0x10,
    },
    // µ (C2 B5) -> Μ (CE 9C).
    Rule {
        pairs: two_byte(0xC2, &[0xB], nibbles(&[5])),
        lead: 0x0C,
        next: -0x19,
    },
    // The second set: Greek (and ÿ).
    // α..ο (CE B1..BF) -> Α..Ο; not ΰ (CE B0).
    Rule {
        pairs: two_byte(0xCE, &[0xB], ANY & !1),
        lead: 0,
        next: -0x20,
    },
    // CF 80..8E: π..ϋ (CF 80..8B) -> Π..Ϋ (CE A0..AB), ς (CF 82) -> Σ
    // (CE A3), ό (CF 8C) -> Ό (CE 8C), ύ, ώ (CF 8D, 8E) -> Ύ, Ώ (CE 8E,
    // 8F), in three rules: the lead's move for all of them...
    Rule {
        pairs: two_byte(0xCF, &[8], ANY & !nibbles(&[0xF])),
        lead: -1,
        next: 0,
    },
    // ...π..ϋ's next byte...
    Rule {
        pairs: two_byte(0xCF, &[8], ANY & !nibbles(&[0xC, 0xD, 0xE, 0xF])),
        lead: 0,
        next: 0x20,
    },
    // ...and one more for ς, ύ, ώ.
    Rule {
        pairs: two_byte(0xCF, &[8], nibbles(&[2, 0xD, 0xE])),
        lead: 0,
        next: 1,
    },
    // ÿ (C3 BF) -> Ÿ (C5 B8): flagged, so here is as good as the first set.
    Rule {
        pairs: two_byte(0xC3, &[0xB], nibbles(&[0xF])),
        lead: 2,
        next: -7,
    },
    // έ, ή, ί (CE AD..AF) -> Έ, Ή, Ί (CE 88..8A), and ά (next rule).
    Rule {
        pairs: two_byte(0xCE, &[0xA], nibbles(&[0xC, 0xD, 0xE, 0xF])),
        lead: 0,
        next: -0x25,
    },
    // ά (CE AC) -> Ά (CE 86), over the rule before.
    Rule {
        pairs: two_byte(0xCE, &[0xA], nibbles(&[0xC])),
        lead: 0,
        next: -1,
    },
    // Greek upper case and signs, CE 81..8F, 91..9F, A1..AF: stay (under
    // the accented vowels' rules at CE AC..AF). Not ΐ (CE 90), nor Π
    // (CE A0), which the nibbles cannot keep apart from it.
    Rule {
        pairs: two_byte(0xCE, &[8, 9, 0xA], ANY & !1),
        lead: 0,
        next: 0,
    },
];

/// The pairs of the rules `set * 8 ..` as classes, for [`lut`].
const fn rule_pairs(set: usize) -> [Class; 8] {
    let mut out = [const {
        Class {
            lead_hi: 0,
            lead_lo: 0,
            next_hi: 0,
            next_lo: 0,
        }
    }; 8];
    let mut k = 0;
    while k < 8 {
        let p = &RULES[set * 8 + k].pairs;
        out[k] = Class {
            lead_hi: p.lead_hi,
            lead_lo: p.lead_lo,
            next_hi: p.next_hi,
            next_lo: p.next_lo,
        };
        k += 1;
    }
    out
}

/// Per set of rules: the four nibble tables of its pairs.
const RULE_LUTS: [[[u8; 16]; 4]; 2] = {
    let (a, b) = (rule_pairs(0), rule_pairs(1));
    [
        [lut(&a, 0), lut(&a, 1), lut(&a, 2), lut(&a, 3)],
        [lut(&b, 0), lut(&b, 1), lut(&b, 2), lut(&b, 3)],
    ]
};

/// The move of a byte by the rule bits of its pair in one set, the set's
/// low four rules indexed by the low nibble and its high four by the high
/// one (the moves of overlapping rules add up): `which` 0 is the lead's
/// move, 1 the next byte's.
const fn moves(set: usize, which: u8, high: bool) -> [u8; 16] {
    let mut t = [0u8; 16];
    let mut bits = 0;
    while bits < 16 {
        let mut k = 0;
        while k < 4 {
            if bits & (1 << k) != 0 {
                let rule = &RULES[set * 8 + if high { k + 4 } else { k }];
                let by = if which == 0 { rule.lead } else { rule.next };
                t[bits] = t[bits].wrapping_add(by as u8);
            }
            k += 1;
        }
        bits += 1;
    }
    t
}

/// Per set: lead move (low, high nibble), next move (low, high nibble).
const MOVES: [[[u8; 16]; 4]; 2] = [
    [
        moves(0, 0, false),
        moves(0, 0, true),
        moves(0, 1, false),
        moves(0, 1, true),
    ],
    [
        moves(1, 0, false),
        moves(1, 0, true),
        moves(1, 1, false),
        moves(1, 1, true),
    ],
];

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

/// The rule bits of the pair (lead, next) in each set: (Greek, first).
#[cfg(test)]
pub(super) fn rule_bits(lead: u8, next: u8) -> (u8, u8) {
    let bits = |t: &[[u8; 16]; 4]| {
        t[0][usize::from(lead >> 4)]
            & t[1][usize::from(lead & 15)]
            & t[2][usize::from(next >> 4)]
            & t[3][usize::from(next & 15)]
    };
    (bits(&RULE_LUTS[1]), bits(&RULE_LUTS[0]))
}

/// The moves of the pair (lead, next), if a rule maps it, as (lead move,
/// next move): the sum over the rules that hold it.
#[cfg(test)]
pub(super) fn ruled(lead: u8, next: u8) -> Option<(i8, i8)> {
    let (greek, first) = rule_bits(lead, next);
    let bits = u16::from(first) | u16::from(greek) << 8;
    (bits != 0).then(|| {
        (0..16)
            .filter(|k| bits & (1 << k) != 0)
            .fold((0i8, 0i8), |(l, n), k| {
                (l.wrapping_add(RULES[k].lead), n.wrapping_add(RULES[k].next))
            })
    })
}

/// Whether this CPU can run [`body`].
pub(super) fn available() -> bool {
    is_x86_feature_detected!("avx2")
}

/// ASCII letters upper-cased in the register: `v - 0x20` where `v` is
/// in a..z ((v - 'a') < 26 unsigned, as a signed compare after moving the
/// range to the bottom of i8).
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn upcase_ascii32(v: __m256i) -> __m256i {
    let bias = _mm256_set1_epi8((0x80u8.wrapping_sub(b'a')) as i8);
    let limit = _mm256_set1_epi8(-128 + 26);
    let lower = _mm256_cmpgt_epi8(limit, _mm256_add_epi8(v, bias));
    _mm256_sub_epi8(v, _mm256_and_si256(lower, _mm256_set1_epi8(0x20)))
}

/// Unicode mode's way in for ASCII text, which is most requests: from the
/// start of `input`, 32-byte blocks that are all ASCII are upper-cased
/// onto `out`, and the length done is returned (a char boundary: every
/// byte before it is ASCII). Once less than a block is left, the last 32
/// bytes of `input` are checked instead, overlapping the ones done: if
/// they are ASCII too, all of `input` is done. Nothing to set up, so a
/// 64-byte request costs a few dozen instructions; [`body`] takes the
/// rest from the first block with a non-ASCII byte. Returns 0 for an
/// input shorter than a block.
///
/// Inlined into the caller (the vector in its registers), around a leaf
/// function that only sees pointers.
///
/// # Safety
/// The CPU must support AVX2 ([`available`]).
#[inline]
pub(super) unsafe fn ascii_blocks(input: &[u8], out: &mut Vec<u8>) -> usize {
    let len = input.len();
    if len < 32 {
        return 0;
    }
    out.reserve(len);
    let start = out.len();
    // SAFETY: AVX2 is the caller's promise; `input` has `len` bytes and
    // `out` room for `len` more after `start`.
    let done = unsafe { ascii_blocks_raw(input.as_ptr(), len, out.as_mut_ptr().add(start)) };
    // SAFETY: the first `done` of them were stored.
    unsafe { out.set_len(start + done) };
    done
}

/// [`ascii_blocks`] on `len >= 32` bytes at `src`, stored at `dst`.
///
/// # Safety
/// AVX2; `src` readable and `dst` writable for `len` bytes.
#[target_feature(enable = "avx2")]
unsafe fn ascii_blocks_raw(src: *const u8, len: usize, dst: *mut u8) -> usize {
    let mut i = 0;
    while len - i >= 32 {
        let a = _mm256_loadu_si256(src.add(i).cast());
        if _mm256_movemask_epi8(a) != 0 {
            return i;
        }
        _mm256_storeu_si256(dst.add(i).cast(), upcase_ascii32(a));
        i += 32;
    }
    if i < len {
        // The last block, over the end of the ones done.
        let a = _mm256_loadu_si256(src.add(len - 32).cast());
        if _mm256_movemask_epi8(a) == 0 {
            _mm256_storeu_si256(dst.add(len - 32).cast(), upcase_ascii32(a));
            i = len;
        }
    }
    i
}

/// Ascii mode with AVX2: every byte's ASCII upper case onto `out`, 32 at
/// a time, the last block overlapping the ones before it. Returns false,
/// doing nothing, for an input shorter than a block.
///
/// # Safety
/// The CPU must support AVX2 ([`available`]).
#[inline]
pub(super) unsafe fn ascii_mode(input: &[u8], out: &mut Vec<u8>) -> bool {
    let len = input.len();
    if len < 32 {
        return false;
    }
    out.reserve(len);
    let start = out.len();
    // SAFETY: AVX2 is the caller's promise; `input` has `len` bytes and
    // `out` room for `len` more after `start`.
    unsafe { ascii_mode_raw(input.as_ptr(), len, out.as_mut_ptr().add(start)) };
    // SAFETY: all `len` were stored.
    unsafe { out.set_len(start + len) };
    true
}

/// [`ascii_mode`] on `len >= 32` bytes at `src`, stored at `dst`.
///
/// # Safety
/// AVX2; `src` readable and `dst` writable for `len` bytes.
#[target_feature(enable = "avx2")]
unsafe fn ascii_mode_raw(src: *const u8, len: usize, dst: *mut u8) {
    let mut i = 0;
    while len - i >= 32 {
        let a = _mm256_loadu_si256(src.add(i).cast());
        _mm256_storeu_si256(dst.add(i).cast(), upcase_ascii32(a));
        i += 32;
    }
    if i < len {
        // The last block again from the input, over the end of the others.
        let a = _mm256_loadu_si256(src.add(len - 32).cast());
        _mm256_storeu_si256(dst.add(len - 32).cast(), upcase_ascii32(a));
    }
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
        let latin_rules = RULE_LUTS[0].map(lut);
        let latin_moves = MOVES[0].map(lut);
        let (greek_rules, greek_moves) = (RULE_LUTS[1].map(lut), MOVES[1].map(lut));
        let nibble = _mm256_set1_epi8(0x0F);
        let bias = _mm256_set1_epi8((0x80u8.wrapping_sub(b'a')) as i8);
        let limit = _mm256_set1_epi8(-128 + 26);
        let case_bit = _mm256_set1_epi8(0x20);
        let zero = _mm256_setzero_si256();
        let last = len - 36;
        // A block's mapped bytes, for the runs between its hard chars;
        // loads of 32 bytes from any offset below 32 stay inside.
        let mut spill = [0u8; 64];
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
                if _mm256_movemask_epi8(v) == 0 {
                    _mm256_storeu_si256(w.end_ptr(32).cast(), up);
                    w.advance(32);
                    i += 32;
                    continue;
                }
                let n = _mm256_loadu_si256(block[1..].as_ptr().cast());
                let hi = |x| _mm256_and_si256(_mm256_srli_epi16(x, 4), nibble);
                let (v_hi, v_lo, n_hi, n_lo) = (
                    hi(v),
                    _mm256_and_si256(v, nibble),
                    hi(n),
                    _mm256_and_si256(n, nibble),
                );
                let pairs = |a, b, c, d| {
                    _mm256_and_si256(
                        _mm256_and_si256(
                            _mm256_shuffle_epi8(a, v_hi),
                            _mm256_shuffle_epi8(b, v_lo),
                        ),
                        _mm256_and_si256(
                            _mm256_shuffle_epi8(c, n_hi),
                            _mm256_shuffle_epi8(d, n_lo),
                        ),
                    )
                };
                let greek = || {
                    let [a, b, c, d] = greek_rules;
                    let rule = pairs(a, b, c, d);
                    let ruled = !(_mm256_movemask_epi8(_mm256_cmpeq_epi8(rule, zero)) as u32);
                    (rule, ruled)
                };
                // The lead of a ruled pair moves by its rule, and the byte
                // after it by the same rule's other move: the rule bits
                // shifted up one byte (across the lanes).
                let moved = |set: usize, rule| {
                    let [lead_lo, lead_hi, next_lo, next_hi] =
                        if set == 0 { latin_moves } else { greek_moves };
                    let by = |r, lo_t, hi_t| {
                        _mm256_add_epi8(
                            _mm256_shuffle_epi8(lo_t, _mm256_and_si256(r, nibble)),
                            _mm256_shuffle_epi8(hi_t, hi(r)),
                        )
                    };
                    let prev =
                        _mm256_alignr_epi8(rule, _mm256_permute2x128_si256(rule, rule, 0x08), 15);
                    _mm256_add_epi8(by(rule, lead_lo, lead_hi), by(prev, next_lo, next_hi))
                };
                let class = pairs(lead_hi, lead_lo, next_hi, next_lo);
                let calm = _mm256_movemask_epi8(_mm256_cmpeq_epi8(class, zero)) as u32;
                // Pairs with case that no rule maps.
                let mut hard = !calm;
                let mut mapped = up;
                let mut ruled = 0;
                // The first set (Latin-1, Cyrillic) where its leads are
                // (C2, C3, D0, D1; C0, C1, D2, D3 with them, as nibbles
                // go): the product of its lead tables, which its pairs
                // then reuse. Greek's set only for pairs still hard: all
                // of its pairs are flagged. CJK, kana, Hangul, emoji skip
                // both.
                let latin = _mm256_and_si256(
                    _mm256_shuffle_epi8(latin_rules[0], v_hi),
                    _mm256_shuffle_epi8(latin_rules[1], v_lo),
                );
                if _mm256_testz_si256(latin, latin) == 0 {
                    let rule = _mm256_and_si256(
                        latin,
                        _mm256_and_si256(
                            _mm256_shuffle_epi8(latin_rules[2], n_hi),
                            _mm256_shuffle_epi8(latin_rules[3], n_lo),
                        ),
                    );
                    ruled = !(_mm256_movemask_epi8(_mm256_cmpeq_epi8(rule, zero)) as u32);
                    mapped = _mm256_add_epi8(mapped, moved(0, rule));
                    hard &= !ruled;
                }
                if hard != 0 {
                    let (rule, ruled_greek) = greek();
                    mapped = _mm256_add_epi8(mapped, moved(1, rule));
                    ruled |= ruled_greek;
                    hard &= !ruled_greek;
                }
                _mm256_storeu_si256(w.end_ptr(32).cast(), mapped);
                // A ruled pair whose second byte is beyond the block is
                // left for the next block, which starts at its lead.
                let keep = 32 - (ruled >> 31) as usize;
                if hard == 0 {
                    w.advance(keep);
                    i += keep;
                    continue;
                }
                // Chars no rule maps: each through the portable step, in
                // place, and the block's mapped bytes between them copied
                // from `spill` (a hard char may change length, `ß` -> `SS`,
                // so what follows moves). The block's first run is stored
                // already.
                _mm256_storeu_si256(spill.as_mut_ptr().cast(), mapped);
                let mut at = hard.trailing_zeros() as usize;
                w.advance(at);
                let mut from;
                loop {
                    // i + at < last + 32 = len - 4: a 4-byte window is there.
                    debug_assert!(i + at + 4 <= len);
                    // SAFETY: as just said.
                    let word = unsafe { input.as_ptr().add(i + at).cast::<u32>().read_unaligned() }
                        .to_le();
                    from = at
                        + if word & 0xE0 == 0xC0 {
                            // A 2-byte char: a flagged pair with a C*/D* lead
                            // has a continuation byte (see CLASSES), as
                            // `entry2` wants; one load from its flat table.
                            debug_assert!(word & 0xC000 == 0x8000);
                            let entry = table.entry2(word);
                            w.store(entry.to_le_bytes());
                            w.advance(entry_len(entry));
                            2
                        } else if word & 0xC0_C0F0 == 0x80_80E0 {
                            // A 3-byte char (`ﬁ`, `ⓐ`, `ａ`...): decoded and
                            // looked up here, not through the portable step
                            // (its pair and caseless tests, then the general
                            // step out of line: about 60 instructions more).
                            // A flagged pair may still be an overlong or a
                            // surrogate (not by CLASSES today, but they are
                            // cheap to rule out); those go to the step.
                            let cp =
                                (word & 0x0F) << 12 | (word & 0x3F00) >> 2 | (word >> 16) & 0x3F;
                            if cp >= 0x800 && cp & 0xF800 != 0xD800 {
                                let page = table.page(cp);
                                let entry = if page == 0 {
                                    u64::from(word) | 3 << 56
                                } else {
                                    table.entry(page, cp)
                                };
                                w.store(entry.to_le_bytes());
                                w.advance(entry_len(entry));
                                3
                            } else {
                                step(table, word, &mut w)
                            }
                        } else {
                            step(table, word, &mut w)
                        };
                    // No flag falls inside the char just taken: its other
                    // bytes (or an invalid run's) are continuation bytes,
                    // and no class flags those. `from` is at most 35.
                    hard &= hard - 1;
                    debug_assert!(hard & !((u64::MAX << from) as u32) == 0);
                    if hard == 0 {
                        break;
                    }
                    at = hard.trailing_zeros() as usize;
                    // SAFETY: `from <= at < 32` and `spill` has 64 bytes.
                    let run = _mm256_loadu_si256(spill.as_ptr().add(from).cast());
                    _mm256_storeu_si256(w.end_ptr(32).cast(), run);
                    w.advance(at - from);
                }
                if from < keep {
                    // SAFETY: as above.
                    let run = _mm256_loadu_si256(spill.as_ptr().add(from).cast());
                    _mm256_storeu_si256(w.end_ptr(32).cast(), run);
                    w.advance(keep - from);
                    from = keep;
                }
                i += from;
            }
            w.commit();
        }
    }
    // The last 4..35 bytes: blocks need 36 left only to handle non-ASCII
    // ones, so ASCII ones are still done here (the end of every pipelined
    // batch of requests).
    i += ascii_blocks(&input[i..], out);
    // The rest, and the decision on the carry. It may begin with the
    // continuation bytes of a caseless char (or invalid bytes) that the
    // last block started: the portable path copies them as invalid, which
    // is the same bytes.
    portable::body(table, &input[i..], out)
}
