//! `--latency-out FILE`: the latency histogram as HdrHistogram's
//! "percentile distribution" text (the `.hgrm` files that wrk2 prints and
//! HdrHistogram's plotter reads), values in milliseconds.
//!
//! The layout is that of the reference implementation's
//! `outputPercentileDistribution` (5 ticks per half distance): a header,
//! one line per percentile step with the value, the percentile as a
//! fraction, the count up to it and 1/(1-percentile), then the mean,
//! standard deviation, maximum, total count and the histogram's bucket
//! layout.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use hdrhistogram::Histogram;

/// Nanoseconds per millisecond, the unit of the file.
const NS_PER_MS: f64 = 1e6;

/// Writes `h` (nanoseconds) to `path`.
pub fn write(path: &Path, h: &Histogram<u64>) -> io::Result<()> {
    let mut out = BufWriter::new(File::create(path)?);
    write_to(&mut out, h)?;
    out.flush()
}

/// Writes `h` (nanoseconds) as percentile distribution text.
pub fn write_to(out: &mut impl Write, h: &Histogram<u64>) -> io::Result<()> {
    writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    )?;
    let ms = |ns: u64| ns as f64 / NS_PER_MS;
    let mut total = 0u64;
    if !h.is_empty() {
        for v in h.iter_quantiles(5) {
            total += v.count_since_last_iteration();
            let value = ms(h.highest_equivalent(v.value_iterated_to()));
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                writeln!(
                    out,
                    "{value:12.3} {q:2.12} {total:10} {:14.2}",
                    1.0 / (1.0 - q)
                )?;
            } else {
                writeln!(out, "{value:12.3} {q:2.12} {total:10}")?;
            }
        }
    }
    let (mean, stdev, max) = if h.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (h.mean() / NS_PER_MS, h.stdev() / NS_PER_MS, ms(h.max()))
    };
    writeln!(
        out,
        "#[Mean    = {mean:12.3}, StdDeviation   = {stdev:12.3}]"
    )?;
    writeln!(
        out,
        "#[Max     = {max:12.3}, Total count    = {:12}]",
        h.len()
    )?;
    writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        // The reference's subBucketCount: the power of two that holds
        // 2 x 10^digits (2,048 for 3 significant digits).
        (2 * 10u64.pow(u32::from(h.sigfig()))).next_power_of_two()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_of_an_hgrm_file() {
        let mut h = super::super::new_histogram();
        // 1,000 replies of 1, 2, ... 1,000 µs: the percentiles are easy
        // to check.
        for us in 1..=1000u64 {
            h.record(us * 1000).unwrap();
        }
        let mut text = Vec::new();
        write_to(&mut text, &h).unwrap();
        let text = String::from_utf8(text).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "       Value     Percentile TotalCount 1/(1-Percentile)"
        );
        assert_eq!(lines[1], "");
        // The first line: the smallest value, percentile 0.
        assert_eq!(
            lines[2],
            "       0.001 0.000000000000          1           1.00"
        );
        // The median: 500 µs = 0.500 ms, 500 of 1,000 replies at or below.
        assert!(
            lines.contains(&"       0.500 0.500000000000        500           2.00"),
            "{text}"
        );
        // The last percentile line: everything, no 1/(1-p) column.
        let last = lines[lines.len() - 4];
        assert_eq!(last, "       1.000 1.000000000000       1000");
        assert_eq!(
            lines[lines.len() - 3],
            // The mean of each value's bucket middle, as the reference has it.
            "#[Mean    =        0.501, StdDeviation   =        0.289]"
        );
        assert_eq!(
            lines[lines.len() - 2],
            "#[Max     =        1.000, Total count    =         1000]"
        );
        assert!(lines[lines.len() - 1].starts_with("#[Buckets = "), "{text}");
    }
}
