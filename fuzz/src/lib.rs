//! Helpers shared by the fuzz targets: turning one fuzz input into data and
//! the points where that data is cut into reads.

/// Most cuts one input asks for. Enough to put several cuts inside one
/// UTF-8 character or telnet command; every target also feeds byte by byte.
pub const MAX_CUTS: usize = 15;

/// Splits a fuzz input into cut positions and the data to cut.
///
/// Layout: byte 0 gives the number of cuts (`byte & 15`), then 2 bytes per
/// cut (little-endian, taken modulo `data.len() + 1`, so any value is a
/// valid position: 0 and `len` give empty pieces), then the data. A short
/// input gets fewer cuts, never a rejection: every input is used.
pub fn cuts_and_data(input: &[u8]) -> (Vec<usize>, &[u8]) {
    let Some((&first, rest)) = input.split_first() else {
        return (Vec::new(), input);
    };
    let n = (usize::from(first) & MAX_CUTS).min(rest.len() / 2);
    let (raw, data) = rest.split_at(2 * n);
    let mut cuts: Vec<usize> = raw
        .chunks_exact(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (data.len() + 1))
        .collect();
    cuts.sort_unstable();
    (cuts, data)
}

/// `data` cut at the sorted positions `cuts` (repeats give empty pieces).
pub fn pieces<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0;
    for &c in cuts {
        out.push(&data[start..c]);
        start = c;
    }
    out.push(&data[start..]);
    out
}
