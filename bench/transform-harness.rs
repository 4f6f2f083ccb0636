// The transform alone, as the server calls it, for `bench/transform` (which
// builds this file in a scratch crate beside two modules: `new`, this
// tree's src/transform/, and `old`, src/transform.rs of a base commit).
//
//   harness time ROUNDS CORPUS...      ns per byte, one JSON line per run
//   harness callgrind CORPUS...        one call of `run` per cell, for
//                                      `valgrind --tool=callgrind
//                                      --toggle-collect=*run* --dump-after=*run*`
//
// Paths, as src/server/ calls the transform: "tcp 4 KiB" and "tcp 64 KiB"
// feed one Upcaser reads of that size (cut at fixed offsets, so chars are
// split across reads) and clear the scratch buffer after each, as conn.rs
// does once the reply is written; "udp" transforms each datagram whole
// (`upcase_into`, as udp.rs), datagrams of at most 1,400 bytes cut at char
// boundaries (a client sends whole text). Every implementation's output is
// checked against std (utf8_chunks + to_uppercase) before anything is
// timed.

use std::hint::black_box;
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Imp {
    Old,
    Portable,
    Avx2,
    AsciiMode,
}

impl Imp {
    fn name(self) -> &'static str {
        match self {
            Imp::Old => "base",
            Imp::Portable => "portable",
            Imp::Avx2 => "avx2",
            Imp::AsciiMode => "ascii mode",
        }
    }
}

const PATHS: [&str; 3] = ["tcp 4 KiB", "tcp 64 KiB", "udp"];

struct Corpus {
    name: String,
    data: Vec<u8>,
    datagrams: Vec<std::ops::Range<usize>>,
}

fn datagrams(data: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < data.len() {
        let mut end = (start + 1400).min(data.len());
        // Back to a char boundary (a lead or ASCII byte), unless the bytes
        // are not text at all.
        let mut e = end;
        while e > start && e < data.len() && data[e] & 0xC0 == 0x80 {
            e -= 1;
        }
        if e > start {
            end = e;
        }
        out.push(start..end);
        start = end;
    }
    out
}

#[inline(never)]
fn run(imp: Imp, path: usize, c: &Corpus, scratch: &mut Vec<u8>) -> usize {
    let level = match imp {
        Imp::Avx2 => new::Level::Avx2,
        _ => new::Level::Portable,
    };
    let mut total = 0;
    match path {
        0 | 1 => {
            let read = if path == 0 { 4096 } else { 65536 };
            match imp {
                Imp::Old => {
                    let mut u = old::Upcaser::new(old::Mode::Unicode);
                    for piece in c.data.chunks(read) {
                        scratch.clear();
                        u.feed(piece, scratch);
                        total += scratch.len();
                    }
                    scratch.clear();
                    u.finish(scratch);
                }
                _ => {
                    let mode = if imp == Imp::AsciiMode { new::Mode::Ascii } else { new::Mode::Unicode };
                    let mut u = new::Upcaser::new(mode);
                    for piece in c.data.chunks(read) {
                        scratch.clear();
                        u.feed_at(level, piece, scratch);
                        total += scratch.len();
                    }
                    scratch.clear();
                    u.finish(scratch);
                }
            }
        }
        _ => {
            for d in &c.datagrams {
                scratch.clear();
                let d = &c.data[d.clone()];
                match imp {
                    Imp::Old => old::upcase_into(old::Mode::Unicode, d, scratch),
                    Imp::AsciiMode => new::upcase_into_at(level, new::Mode::Ascii, d, scratch),
                    _ => new::upcase_into_at(level, new::Mode::Unicode, d, scratch),
                }
                total += scratch.len();
            }
        }
    }
    total + scratch.len()
}

/// The whole output of one path, for the check against std.
fn output(imp: Imp, path: usize, c: &Corpus) -> Vec<u8> {
    let level = if imp == Imp::Avx2 { new::Level::Avx2 } else { new::Level::Portable };
    let mut out = Vec::new();
    match path {
        0 | 1 => {
            let read = if path == 0 { 4096 } else { 65536 };
            let mut u = new::Upcaser::new(new::Mode::Unicode);
            let mut o = old::Upcaser::new(old::Mode::Unicode);
            for piece in c.data.chunks(read) {
                match imp {
                    Imp::Old => o.feed(piece, &mut out),
                    _ => u.feed_at(level, piece, &mut out),
                }
            }
            u.finish(&mut out);
            o.finish(&mut out);
        }
        _ => {
            for d in &c.datagrams {
                match imp {
                    Imp::Old => old::upcase_into(old::Mode::Unicode, &c.data[d.clone()], &mut out),
                    _ => new::upcase_into_at(level, new::Mode::Unicode, &c.data[d.clone()], &mut out),
                }
            }
        }
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (what, rest) = (args[1].as_str(), &args[2..]);
    let (rounds, files) = if what == "time" {
        (rest[0].parse::<usize>().expect("ROUNDS"), &rest[1..])
    } else {
        (1, rest)
    };
    let corpora: Vec<Corpus> = files
        .iter()
        .map(|f| {
            let data = std::fs::read(f).expect("corpus");
            let name = std::path::Path::new(f).file_stem().unwrap().to_string_lossy().into_owned();
            Corpus { datagrams: datagrams(&data), name, data }
        })
        .collect();
    let mut imps = vec![Imp::Old, Imp::Portable];
    if new::Level::available().contains(&new::Level::Avx2) {
        imps.push(Imp::Avx2);
    }
    // Exactness first, and the tables built outside what is measured.
    new::warm_up(new::Mode::Unicode);
    old::warm_up(old::Mode::Unicode);
    for c in &corpora {
        let want = new::definition(&c.data);
        for &imp in &imps {
            for path in 0..PATHS.len() {
                assert!(output(imp, path, c) == want, "{} differs on {} {}", imp.name(), c.name, PATHS[path]);
            }
        }
    }
    let mut scratch = Vec::with_capacity(3 * 65536 + 64);
    let mut cells = Vec::new();
    for c in &corpora {
        for path in 0..PATHS.len() {
            for &imp in &imps {
                cells.push((c, path, imp));
            }
        }
        if c.name == "english" {
            for path in 0..PATHS.len() {
                cells.push((c, path, Imp::AsciiMode));
            }
        }
    }
    if what == "callgrind" {
        for &(c, path, imp) in &cells {
            black_box(run(imp, path, c, &mut scratch));
            println!(
                "{{\"corpus\":\"{}\",\"path\":\"{}\",\"imp\":\"{}\",\"bytes\":{}}}",
                c.name,
                PATHS[path],
                imp.name(),
                c.data.len()
            );
        }
        return;
    }
    // About 1 MB per measurement; rounds interleave every cell.
    for round in 0..rounds {
        for &(c, path, imp) in &cells {
            let reps = (1 << 20) / c.data.len().max(1) + 1;
            let start = Instant::now();
            for _ in 0..reps {
                black_box(run(imp, path, c, &mut scratch));
            }
            let ns = start.elapsed().as_nanos() as f64 / (reps * c.data.len()) as f64;
            println!(
                "{{\"round\":{round},\"corpus\":\"{}\",\"path\":\"{}\",\"imp\":\"{}\",\"bytes\":{},\"ns_per_byte\":{ns:.5}}}",
                c.name,
                PATHS[path],
                imp.name(),
                c.data.len()
            );
        }
    }
}
