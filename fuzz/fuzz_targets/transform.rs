//! The streaming transform: any bytes, cut into reads anywhere, never panic
//! and give exactly the one-shot result, which is itself checked against the
//! definition (`utf8_chunks`: valid chunks `to_uppercase`, invalid unchanged)
//! so the target tests correctness, not only self-consistency. Unicode mode
//! runs on every implementation this CPU has (`Level::available`: portable,
//! and AVX2 where there is AVX2), each checked the same way.

#![no_main]

use libfuzzer_sys::fuzz_target;
use upcase::transform::{
    definition as reference, max_growth, upcase, upcase_into_at, Level, Mode, Upcaser,
};
use upcase_fuzz::{cuts_and_data, pieces};

/// Feeds `pieces` to `upcaser`, then finishes, checking the documented
/// per-call invariants on the way: the carry is at most 3 bytes (none in
/// ascii mode) and one call's output is within
/// `max_growth * (input + carried before)`.
fn stream(level: Level, upcaser: &mut Upcaser, pieces: &[&[u8]]) -> Vec<u8> {
    let mode = upcaser.mode();
    let mut out = Vec::new();
    for piece in pieces {
        let (before, carried) = (out.len(), upcaser.carried());
        upcaser.feed_at(level, piece, &mut out);
        assert!(
            out.len() - before <= max_growth(mode) * (piece.len() + carried),
            "growth bound broken by {piece:02X?} with {carried} carried"
        );
        assert!(upcaser.carried() <= 3);
        if mode == Mode::Ascii {
            assert_eq!(upcaser.carried(), 0);
        }
    }
    upcaser.finish(&mut out);
    assert_eq!(upcaser.carried(), 0);
    out
}

fuzz_target!(|input: &[u8]| {
    let (cuts, data) = cuts_and_data(input);
    let cut = pieces(data, &cuts);
    let bytes: Vec<&[u8]> = data.chunks(1).collect();

    // Unicode, on every level: one-shot equals the definition and
    // respects the bound.
    let want = reference(data);
    assert!(want.len() <= max_growth(Mode::Unicode) * data.len());
    for level in Level::available() {
        let mut one_shot = Vec::new();
        upcase_into_at(level, Mode::Unicode, data, &mut one_shot);
        assert_eq!(one_shot, want, "{level:?} one-shot vs utf8_chunks reference");
        // Streamed at the fuzzed cuts, and one byte per read, equals one-shot.
        let mut u = Upcaser::new(Mode::Unicode);
        assert_eq!(stream(level, &mut u, &cut), want, "{level:?} cut at {cuts:?}");
        // `finish` leaves a fresh stream: the same Upcaser gives the same again.
        assert_eq!(stream(level, &mut u, &bytes), want, "{level:?} byte by byte, reused");
        // `upcase_into_at` appends, leaving what was there.
        let mut out = b"> ".to_vec();
        upcase_into_at(level, Mode::Unicode, data, &mut out);
        assert_eq!((&out[..2], &out[2..]), (&b"> "[..], &want[..]));
    }
    assert_eq!(upcase(Mode::Unicode, data), want);

    // Ascii: byte for byte, a-z only, in any pieces.
    let want = data.to_ascii_uppercase();
    assert_eq!(upcase(Mode::Ascii, data), want);
    let mut a = Upcaser::new(Mode::Ascii);
    assert_eq!(stream(Level::best(), &mut a, &cut), want, "ascii cut at {cuts:?}");
    assert_eq!(stream(Level::best(), &mut a, &bytes), want, "ascii byte by byte");
});
