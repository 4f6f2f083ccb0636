//! What a person watching a run sees, and what a plot of it is made of:
//! the live progress line on a terminal, and `--timeline FILE`, one row per
//! second of the run.
//!
//! The progress line is drawn on standard error (the report goes to
//! standard output, so `upcase-bench ... > report.txt` still shows it), and
//! only when standard error is a terminal and `--json` is not given: a
//! script that reads the JSON, or a pipe, gets no escape codes and no
//! progress text at all.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Whether the progress line is drawn: on a terminal, and not with
/// `--json` (whose reader is a program, even when the terminal is there).
pub fn progress_visible(json: bool, stderr_is_terminal: bool) -> bool {
    !json && stderr_is_terminal
}

/// How often the line is redrawn at most.
const REDRAW: Duration = Duration::from_millis(200);

/// What the line shows, gathered by the mode's loop.
pub(super) struct Status<'a> {
    /// The phase's name: "connecting", "measuring", ...
    pub phase: &'a str,
    /// Connections (clients, flows) up, and how many were asked for.
    pub up: usize,
    /// ... out of this many.
    pub target: usize,
    /// Verified replies since the start, in any phase.
    pub replies: u64,
    /// Errors so far.
    pub errors: u64,
    /// When the run is expected to end, once known.
    pub ends: Option<Instant>,
}

/// The live progress line.
pub(super) struct Progress {
    /// The indicatif line (a hidden one when not visible).
    bar: ProgressBar,
    /// When the run started.
    start: Instant,
    /// When the line was last redrawn, and the replies counted then.
    last: (Instant, u64),
}

impl Progress {
    /// A line on standard error if [`progress_visible`], else a hidden one
    /// (every call then costs next to nothing and prints nothing).
    pub fn new(json: bool, start: Instant) -> Progress {
        let target = if progress_visible(json, io::stderr().is_terminal()) {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(None, target);
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        Progress {
            bar,
            start,
            last: (start, 0),
        }
    }

    /// Redraws the line (at most 5 times a second).
    pub fn update(&mut self, now: Instant, s: &Status) {
        let since = now.saturating_duration_since(self.last.0);
        if since < REDRAW || self.bar.is_hidden() {
            return;
        }
        let rate = s.replies.saturating_sub(self.last.1) as f64 / since.as_secs_f64();
        self.last = (now, s.replies);
        let elapsed = now.saturating_duration_since(self.start).as_secs_f64();
        let total = match s.ends {
            Some(end) => format!(
                "{:.1}s",
                end.saturating_duration_since(self.start).as_secs_f64()
            ),
            None => "?".into(),
        };
        self.bar.set_message(format!(
            "{}: {}/{} up, {rate:.0} replies/s, {} errors, {elapsed:.1}s/{total}",
            s.phase, s.up, s.target, s.errors
        ));
        self.bar.tick();
    }

    /// Runs `f` (which prints a line) with the progress line out of its way.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.bar.suspend(f)
    }

    /// Removes the line, so that the report starts on a clean line.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// The row format of `--timeline`, from the file's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    /// `.jsonl` or `.json`: one JSON object per line.
    JsonLines,
    /// Anything else: CSV with a header line.
    Csv,
}

/// `--timeline FILE`: one row per second since the run started.
pub(super) struct Timeline {
    /// The file.
    out: BufWriter<File>,
    /// CSV or JSON lines.
    format: Format,
    /// When second 0 began.
    start: Instant,
    /// The second being gathered (0, 1, ...).
    second: u64,
    /// Latency of this second's replies, nanoseconds.
    latency: Histogram<u64>,
    /// This second's verified replies.
    replies: u64,
    /// This second's errors.
    errors: u64,
    /// This second's completed connections (churn).
    connections: u64,
    /// The phase the run was in when last told.
    phase: &'static str,
    /// The first write error, reported at the end.
    failed: Option<io::Error>,
}

impl Timeline {
    /// Creates (truncates) `path` and writes the CSV header if CSV.
    pub fn create(path: &Path, start: Instant) -> io::Result<Timeline> {
        let format = match path.extension().and_then(|e| e.to_str()) {
            Some("jsonl" | "json") => Format::JsonLines,
            _ => Format::Csv,
        };
        let mut out = BufWriter::new(File::create(path)?);
        if format == Format::Csv {
            writeln!(
                out,
                "second,span_s,phase,replies,replies_per_s,errors,connections,p50_us,p99_us"
            )?;
        }
        Ok(Timeline {
            out,
            format,
            start,
            second: 0,
            latency: super::new_histogram(),
            replies: 0,
            errors: 0,
            connections: 0,
            phase: "connecting",
            failed: None,
        })
    }

    /// Writes the rows of every second that ended before `now`.
    pub fn advance(&mut self, now: Instant) {
        while now >= self.start + Duration::from_secs(self.second + 1) {
            self.row(1.0);
        }
    }

    /// Notes the phase now.
    pub fn phase(&mut self, now: Instant, phase: &'static str) {
        self.advance(now);
        self.phase = phase;
    }

    /// A verified reply at `now` that took `ns`.
    pub fn reply(&mut self, now: Instant, ns: u64) {
        self.advance(now);
        self.replies += 1;
        self.latency.saturating_record(ns.max(1));
    }

    /// An error at `now`.
    pub fn error(&mut self, now: Instant) {
        self.advance(now);
        self.errors += 1;
    }

    /// A connection completed at `now` (churn).
    pub fn connection(&mut self, now: Instant) {
        self.advance(now);
        self.connections += 1;
    }

    /// Writes the last, partial second and flushes the file.
    pub fn finish(mut self, now: Instant) -> io::Result<()> {
        self.advance(now);
        let span = now
            .saturating_duration_since(self.start + Duration::from_secs(self.second))
            .as_secs_f64();
        if span > 0.0 {
            self.row(span);
        }
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        self.out.flush()
    }

    /// Writes the row of the current second, `span` seconds long, and
    /// starts the next one.
    fn row(&mut self, span: f64) {
        let us = |h: &Histogram<u64>, q: f64| {
            if h.is_empty() {
                None
            } else {
                Some(h.value_at_quantile(q) as f64 / 1000.0)
            }
        };
        let (p50, p99) = (us(&self.latency, 0.5), us(&self.latency, 0.99));
        let per_s = self.replies as f64 / span;
        let result = match self.format {
            Format::Csv => {
                let opt = |v: Option<f64>| v.map(|v| format!("{v:.1}")).unwrap_or_default();
                writeln!(
                    self.out,
                    "{},{span:.3},{},{},{per_s:.1},{},{},{},{}",
                    self.second,
                    self.phase,
                    self.replies,
                    self.errors,
                    self.connections,
                    opt(p50),
                    opt(p99)
                )
            }
            Format::JsonLines => {
                let row = serde_json::json!({
                    "second": self.second,
                    "span_s": span,
                    "phase": self.phase,
                    "replies": self.replies,
                    "replies_per_s": per_s,
                    "errors": self.errors,
                    "connections": self.connections,
                    "p50_us": p50,
                    "p99_us": p99,
                });
                writeln!(self.out, "{row}")
            }
        };
        if let Err(e) = result {
            self.failed.get_or_insert(e);
        }
        self.second += 1;
        self.latency.reset();
        self.replies = 0;
        self.errors = 0;
        self.connections = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_is_for_people_at_a_terminal_only() {
        assert!(progress_visible(false, true));
        assert!(!progress_visible(true, true), "--json on a terminal");
        assert!(!progress_visible(false, false), "piped");
        assert!(!progress_visible(true, false));
    }

    #[test]
    fn timeline_rows_per_second_in_both_formats() {
        let dir = std::env::temp_dir();
        let start = Instant::now();
        for name in ["tl.csv", "tl.jsonl"] {
            let path = dir.join(format!("upcase-{}-{name}", std::process::id()));
            let mut t = Timeline::create(&path, start).unwrap();
            t.reply(start + Duration::from_millis(100), 1_000);
            t.reply(start + Duration::from_millis(200), 2_000);
            t.error(start + Duration::from_millis(300));
            t.phase(start + Duration::from_millis(1500), "measuring");
            t.connection(start + Duration::from_millis(2100));
            t.finish(start + Duration::from_millis(2500)).unwrap();
            let text = std::fs::read_to_string(&path).unwrap();
            let _ = std::fs::remove_file(&path);
            let lines: Vec<&str> = text.lines().collect();
            if name.ends_with(".csv") {
                assert_eq!(
                    lines,
                    [
                        "second,span_s,phase,replies,replies_per_s,errors,connections,p50_us,p99_us",
                        "0,1.000,connecting,2,2.0,1,0,1.0,2.0",
                        "1,1.000,measuring,0,0.0,0,0,,",
                        "2,0.500,measuring,0,0.0,0,1,,",
                    ]
                );
            } else {
                assert_eq!(lines.len(), 3, "{text}");
                let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
                assert_eq!(first["replies"], 2);
                assert_eq!(first["errors"], 1);
                assert_eq!(first["p99_us"], 2.0);
                let last: serde_json::Value = serde_json::from_str(lines[2]).unwrap();
                assert_eq!(last["span_s"], 0.5);
                assert_eq!(last["connections"], 1);
                assert_eq!(last["p50_us"], serde_json::Value::Null);
            }
        }
    }
}
