//! Past one process and one event loop: a run split into parts, each part
//! one event loop over a share of the connections, the parts' figures
//! merged exactly.
//!
//! One process holds as many connections as its descriptor limit (20,000
//! on the benchmark machine), so `--workers N` re-executes the
//! `upcase-bench` binary N times with the same arguments plus the hidden
//! `--part I/N`; `--threads T` runs T event loops in each process. Part k of
//! n gets connections `c·k/n .. c·(k+1)/n` (their numbers pick their source
//! address, see [`super::source`], and their payload variants), a share of
//! `--messages`, `--connect-rate` and `--max-connecting`, and only part 0
//! gets `--server-pid`.
//!
//! The parts measure the same window: each says `settled` once all its
//! connections are up (or given up on); when every part has, the
//! coordinator tells them all one moment to begin the warm-up (a process
//! as `go NANOSECONDS` of `CLOCK_MONOTONIC` on its standard input, which
//! every process on the machine shares), and each then warms up and
//! measures for `--duration` from there. A part ends by handing over its
//! counts, its error counts and samples, and its latency histogram bucket
//! by bucket (a worker process prints them as one JSON line, `result
//! {...}`): messages, bytes and errors are summed, histograms added, never
//! averaged, and the percentiles read from the sum. A part that fails, or a
//! worker process that exits without its result, is an error of the whole
//! run (exit status 1) that names it.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::str::FromStr;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::report::{self, Errors, Fairness, ProcSample, Report, ServerUsage};
use super::{source, tcp, BenchError, Kind, Options, MAX_SAMPLES};

/// Descriptors a worker keeps besides its connections (stdio, the poll,
/// pipes), when `--workers` is chosen from the descriptor limit.
const RESERVED_FDS: u64 = 64;

/// How far ahead of "now" the coordinator sets the common start, so every
/// worker has read it before it comes.
const START_MARGIN: Duration = Duration::from_millis(20);

/// Part `index` of `count` of a run (the hidden `--part I/N`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part {
    /// Which part, from 0.
    pub index: usize,
    /// Of how many.
    pub count: usize,
}

impl FromStr for Part {
    type Err = String;

    fn from_str(s: &str) -> Result<Part, String> {
        let bad = || format!("invalid part {s:?}: want I/N with I < N");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (i.parse().map_err(|_| bad())?, n.parse().map_err(|_| bad())?);
        if index >= count {
            return Err(bad());
        }
        Ok(Part { index, count })
    }
}

impl Part {
    /// The share of `total` that is this part's: `total·i/n .. total·(i+1)/n`.
    fn range(self, total: usize) -> (usize, usize) {
        let at = |k: usize| (total as u128 * k as u128 / self.count as u128) as usize;
        (at(self.index), at(self.index + 1))
    }

    /// Sub-part `t` of `threads` of this part, as a part of the whole.
    fn sub(self, t: usize, threads: usize) -> Part {
        Part {
            index: self.index * threads + t,
            count: self.count * threads,
        }
    }
}

/// The binary and arguments to re-execute for worker processes.
static COMMAND: OnceLock<(PathBuf, Vec<OsString>)> = OnceLock::new();

/// Lets `--workers` above 1 re-execute this process's own binary with its
/// own arguments: `upcase-bench` calls this first. A library caller of
/// [`super::run`] has no such binary, and gets a usage error instead.
pub fn enable_worker_processes() {
    if let Ok(exe) = std::env::current_exe() {
        let _ = COMMAND.set((exe, std::env::args_os().skip(1).collect()));
    }
}

/// How a run is split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Plan {
    /// Worker processes.
    workers: usize,
    /// Event loops per process.
    threads: usize,
    /// Source addresses.
    sources: usize,
}

impl Plan {
    fn new(options: &Options) -> Result<Plan, BenchError> {
        let c = options.connections.get();
        let splittable = matches!(options.kind, Kind::Tcp | Kind::Idle);
        let name = kind_name(options.kind);
        let asked_split = options.workers.is_some_and(|w| w > 1) || options.threads.get() > 1;
        if !splittable && asked_split {
            return Err(BenchError::Usage(format!(
                "--workers and --threads are for tcp and idle runs, not {name}"
            )));
        }
        let sources = match options.kind {
            Kind::Tcp | Kind::Idle => {
                source::count(options.source_addrs, c, options.addr).map_err(BenchError::Usage)?
            }
            _ if options.source_addrs.is_some_and(|n| n > 1) => {
                return Err(BenchError::Usage(format!(
                    "--source-addrs is for tcp and idle runs, not {name}"
                )))
            }
            _ => 1,
        };
        let workers = match options.workers {
            Some(0) => return Err(BenchError::Usage("--workers must be at least 1".into())),
            Some(w) => w,
            None if splittable => c.div_ceil(per_process()),
            None => 1,
        };
        // No part without a connection.
        let workers = workers.clamp(1, c);
        let threads = options.threads.get().clamp(1, (c / workers).max(1));
        if workers > 1 || threads > 1 {
            // The open-loop schedule and its figures, and the timeline's
            // seconds, belong to one event loop; parts would each run the
            // whole rate or write the same file. A usage error rather
            // than a wrong figure.
            let one_loop = |flag: &str| {
                BenchError::Usage(format!(
                    "{flag} needs the run in one event loop, but it is split over {workers} \
                     worker process(es) x {threads} thread(s): give --workers 1 --threads 1 \
                     (at most {} connections per process here)",
                    per_process()
                ))
            };
            if options.rate.is_some() {
                return Err(one_loop("--rate"));
            }
            if options.timeline.is_some() {
                return Err(one_loop("--timeline"));
            }
        }
        Ok(Plan {
            workers,
            threads,
            sources,
        })
    }
}

/// Connections one worker process may hold: its descriptor limit (the hard
/// one: every process raises its soft limit to it) less a reserve.
fn per_process() -> usize {
    use rustix::process::{getrlimit, Resource};
    let hard = getrlimit(Resource::Nofile).maximum.unwrap_or(u64::MAX);
    hard.saturating_sub(RESERVED_FDS)
        .clamp(1, usize::MAX as u64) as usize
}

/// Checks the splitting options of a run that is not split (udp).
pub(super) fn check_unsplit(options: &Options) -> Result<(), BenchError> {
    Plan::new(options).map(|_| ())
}

/// The name of a kind as on the command line.
fn kind_name(kind: Kind) -> String {
    kind.to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}

/// Runs `options` (a `tcp` or `idle` run), split as it asks.
pub(super) fn run(options: &Options) -> Result<Report, BenchError> {
    let plan = Plan::new(options)?;
    let mut options = options.clone();
    options.sources = plan.sources;
    match options.part {
        // A worker process: its part, told when to start by its coordinator.
        Some(part) => {
            let partial = run_process(&options, part, plan.threads, Some(Gate::stdin()))?;
            Ok(partial.into_report(&options, None))
        }
        None if plan.workers > 1 => run_workers(&options, plan.workers),
        None if plan.threads > 1 => {
            let baseline = options.server_pid.and_then(ProcSample::read);
            let whole = Part { index: 0, count: 1 };
            let partial = run_process(&options, whole, plan.threads, None)?;
            Ok(partial.into_report(&options, baseline))
        }
        None => tcp::run(&options, None),
    }
}

/// The options of one part: its share of the connections and of the
/// limits that are per run.
fn share(options: &Options, part: Part) -> Options {
    let mut o = options.clone();
    let (first, end) = part.range(options.connections.get());
    o.part = Some(part);
    o.first_connection = first;
    o.connections = std::num::NonZeroUsize::new(end - first).unwrap_or(o.connections);
    let split = |v: u64| {
        let (a, b) = part.range(v as usize);
        (b - a).max(1) as u64
    };
    o.messages = o
        .messages
        .and_then(|m| std::num::NonZeroU64::new(split(m.get())));
    if o.connect_rate > 0 {
        o.connect_rate = split(o.connect_rate);
    }
    o.max_connecting = std::num::NonZeroUsize::new(split(o.max_connecting.get() as u64) as usize)
        .unwrap_or(o.max_connecting);
    if part.index != 0 {
        o.server_pid = None;
    }
    // Scripts read the coordinator's report; a part's progress line would
    // fight the others' for the terminal.
    o.json = true;
    o
}

/// One process's part: `threads` event loops over sub-parts of `part`,
/// merged. `upstream`: the coordinator that says when to start.
fn run_process(
    options: &Options,
    part: Part,
    threads: usize,
    upstream: Option<Gate>,
) -> Result<Partial, BenchError> {
    if threads == 1 {
        let report = tcp::run(&share(options, part), upstream)?;
        return Ok(Partial::from_report(&report));
    }
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|scope| {
        let mut starts = Vec::new();
        for t in 0..threads {
            let (go_tx, go_rx) = mpsc::channel();
            starts.push(go_tx);
            let gate = Gate {
                notify: Notify::Channel(tx.clone(), t),
                go: go_rx,
                told: false,
            };
            let sub = share(options, part.sub(t, threads));
            let tx = tx.clone();
            scope.spawn(move || {
                let result = tcp::run(&sub, Some(gate))
                    .map(|r| Partial::from_report(&r))
                    .map_err(|e| e.to_string());
                let _ = tx.send(Msg::Done(t, Box::new(result)));
            });
        }
        drop(tx);
        let results = coordinate(threads, &rx, |t, at| starts[t].send(at).is_ok(), upstream)?;
        Ok(merge(results, "thread"))
    })
}

/// Starts `workers` worker processes and merges their results.
fn run_workers(options: &Options, workers: usize) -> Result<Report, BenchError> {
    let Some((exe, args)) = COMMAND.get() else {
        return Err(BenchError::Usage(format!(
            "{workers} worker processes: --workers above 1 re-executes the upcase-bench binary, \
             so it works from that binary only"
        )));
    };
    // The server's memory before any connection, for the memory per idle
    // connection.
    let baseline = options.server_pid.and_then(ProcSample::read);
    let (tx, rx) = mpsc::channel();
    let mut children = Children(Vec::new());
    for i in 0..workers {
        let mut child = Command::new(exe)
            .args(args)
            .arg("--part")
            .arg(format!("{i}/{workers}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(BenchError::io("start a worker process"))?;
        let stdout = child.stdout.take();
        let stdin = child.stdin.take();
        children.0.push((child, stdin));
        let tx = tx.clone();
        std::thread::spawn(move || {
            let result = match stdout {
                Some(out) => read_worker(i, BufReader::new(out), &tx),
                None => Err("no pipe from it".into()),
            };
            let _ = tx.send(Msg::Done(i, Box::new(result)));
        });
    }
    drop(tx);
    let results = coordinate(
        workers,
        &rx,
        |i, at| {
            let line = format!("go {}\n", monotonic_ns(at));
            match &mut children.0[i].1 {
                Some(stdin) => stdin.write_all(line.as_bytes()).is_ok(),
                None => false,
            }
        },
        None,
    )?;
    let mut results = results;
    for (i, (child, stdin)) in children.0.iter_mut().enumerate() {
        drop(stdin.take());
        let status = child.wait().map_err(BenchError::io("wait for a worker"))?;
        if let Err(e) = &mut results[i] {
            e.push_str(&format!(" ({status})"));
        }
    }
    Ok(merge(results, "worker").into_report(options, baseline))
}

/// Reads a worker's standard output: `settled`, then `result {...}`.
fn read_worker(i: usize, out: impl BufRead, tx: &Sender<Msg>) -> Result<Partial, String> {
    for line in out.lines() {
        let line = line.map_err(|e| format!("reading its output: {e}"))?;
        if line == "settled" {
            let _ = tx.send(Msg::Settled(i));
        } else if let Some(json) = line.strip_prefix("result ") {
            return serde_json::from_str(json).map_err(|e| format!("its result: {e}"));
        }
    }
    Err("exited without a result".into())
}

/// Kills the worker processes still running if the coordinator gives up.
struct Children(Vec<(Child, Option<ChildStdin>)>);

impl Drop for Children {
    fn drop(&mut self) {
        for (child, _) in &mut self.0 {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// What a part tells its coordinator.
enum Msg {
    /// Every connection of part I is up or given up on.
    Settled(usize),
    /// Part I ended, with its figures or why it failed.
    Done(usize, Box<Result<Partial, String>>),
}

/// Waits until every part has settled (or ended), then tells them all one
/// moment to start (asking `upstream` for it first, if there is one); then
/// waits for every part's result. `start(i, at)` tells part i; false: it is
/// gone (its result says why).
fn coordinate(
    parts: usize,
    rx: &Receiver<Msg>,
    mut start: impl FnMut(usize, Instant) -> bool,
    upstream: Option<Gate>,
) -> Result<Vec<Result<Partial, String>>, BenchError> {
    let mut results: Vec<Option<Result<Partial, String>>> = (0..parts).map(|_| None).collect();
    let mut settled = vec![false; parts];
    let receive = |results: &mut Vec<Option<_>>, settled: &mut Vec<bool>| match rx.recv() {
        Ok(Msg::Settled(i)) => settled[i] = true,
        Ok(Msg::Done(i, r)) => results[i] = Some(*r),
        // Every part's sender is gone: a part that sent no result (its
        // thread panicked) never will.
        Err(_) => {
            for r in results.iter_mut().filter(|r| r.is_none()) {
                *r = Some(Err("ended without a result".into()));
            }
        }
    };
    while (0..parts).any(|i| !settled[i] && results[i].is_none()) {
        receive(&mut results, &mut settled);
    }
    let at = match upstream {
        Some(mut gate) => {
            gate.settled();
            gate.wait()?
        }
        None => Instant::now() + START_MARGIN,
    };
    for (i, result) in results.iter().enumerate() {
        if result.is_none() {
            start(i, at);
        }
    }
    while results.iter().any(Option::is_none) {
        receive(&mut results, &mut settled);
    }
    Ok(results.into_iter().flatten().collect())
}

/// A part's side of [`coordinate`], which its event loop checks.
pub(super) struct Gate {
    /// Where `settled` goes.
    notify: Notify,
    /// Where the start comes from.
    go: Receiver<Instant>,
    /// Whether `settled` was said.
    told: bool,
}

/// Where a part says `settled`.
enum Notify {
    /// A worker process: a line on standard output.
    Stdout,
    /// A thread: a message to the process's coordinating thread.
    Channel(Sender<Msg>, usize),
}

impl Gate {
    /// The gate of a worker process: `settled` on standard output, `go`
    /// read from standard input by a thread of its own.
    fn stdin() -> Gate {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { return };
                let at = line.strip_prefix("go ").and_then(|ns| ns.parse().ok());
                if let Some(ns) = at {
                    let _ = tx.send(instant_at(ns));
                    return;
                }
            }
        });
        Gate {
            notify: Notify::Stdout,
            go: rx,
            told: false,
        }
    }

    /// Says (once) that every connection of this part is up or given up on.
    pub(super) fn settled(&mut self) {
        if std::mem::replace(&mut self.told, true) {
            return;
        }
        match &self.notify {
            Notify::Stdout => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "settled").and_then(|()| out.flush());
            }
            Notify::Channel(tx, i) => {
                let _ = tx.send(Msg::Settled(*i));
            }
        }
    }

    /// When the warm-up starts, once the coordinator has said so.
    pub(super) fn poll(&mut self) -> Result<Option<Instant>, BenchError> {
        match self.go.try_recv() {
            Ok(at) => Ok(Some(at)),
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err(coordinator_gone()),
        }
    }

    /// Blocks until the coordinator says when to start.
    fn wait(&mut self) -> Result<Instant, BenchError> {
        self.go.recv().map_err(|_| coordinator_gone())
    }
}

fn coordinator_gone() -> BenchError {
    BenchError::Io {
        context: "the coordinating process",
        source: std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "closed the pipe before saying when to start",
        ),
    }
}

/// Now on `CLOCK_MONOTONIC`, which every process on the machine shares
/// (and `Instant` reads), in nanoseconds.
fn monotonic_now() -> u128 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u128 * 1_000_000_000 + t.tv_nsec as u128
}

/// `at` as nanoseconds of `CLOCK_MONOTONIC`, to hand to another process.
fn monotonic_ns(at: Instant) -> u128 {
    let (now, mono) = (Instant::now(), monotonic_now());
    match at.checked_duration_since(now) {
        Some(ahead) => mono + ahead.as_nanos(),
        None => mono.saturating_sub(now.duration_since(at).as_nanos()),
    }
}

/// The `Instant` of `ns` nanoseconds of `CLOCK_MONOTONIC`.
fn instant_at(ns: u128) -> Instant {
    let (now, mono) = (Instant::now(), monotonic_now());
    let nanos = |d: u128| Duration::from_nanos(d.min(u64::MAX as u128) as u64);
    if ns >= mono {
        now + nanos(ns - mono)
    } else {
        now.checked_sub(nanos(mono - ns)).unwrap_or(now)
    }
}

/// A part's figures, in the form that adds up exactly.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct Partial {
    /// Connections that completed a verified exchange.
    connections_up: usize,
    /// Until every connection of the part was up, seconds.
    connect_s: f64,
    /// Verified replies in the window.
    messages: u64,
    /// Their bytes.
    reply_bytes: u64,
    /// The window's length (the same for every part, but `--messages` may
    /// end one early), seconds.
    window_s: f64,
    /// The latency histogram (nanoseconds): (bucket value, count) pairs.
    latency: Vec<(u64, u64)>,
    /// Replies per connection: fewest, most, connections with none,
    /// replies in all, connections counted.
    fairness: (u64, u64, u64, u64, u64),
    /// Errors by kind.
    errors: Errors,
    /// The first errors in words.
    samples: Vec<String>,
    /// Part 0's view of the server.
    server: Option<ServerUsage>,
    /// Parts that failed outright, in words.
    failed: Vec<String>,
}

impl Partial {
    fn from_report(r: &Report) -> Partial {
        let latency = r
            .latency_histogram
            .iter()
            .flat_map(|h| h.iter_recorded())
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect();
        let f = &r.fairness;
        let reply_bytes = (r.mb_per_s * 1e6 * r.window_s).round() as u64;
        Partial {
            connections_up: r.connections_up,
            connect_s: r.connect_s,
            messages: r.messages,
            reply_bytes,
            window_s: r.window_s,
            latency,
            fairness: (
                f.min,
                f.max,
                f.stalled,
                (f.mean * f.connections as f64).round() as u64,
                f.connections,
            ),
            errors: r.errors.clone(),
            samples: r.error_samples.clone(),
            server: r.server.clone(),
            failed: Vec::new(),
        }
    }

    /// The whole run's report from the merged parts (or a worker
    /// process's, which [`print_part`] turns back into a `Partial`).
    fn into_report(self, options: &Options, baseline: Option<ProcSample>) -> Report {
        let histogram = self.histogram();
        let mut errors = self.errors;
        let mut samples = self.samples;
        for failure in &self.failed {
            errors.other += 1;
            if samples.len() < MAX_SAMPLES {
                samples.push(failure.clone());
            }
        }
        let (min, max, stalled, sum, n) = self.fairness;
        let idle = options.kind == Kind::Idle;
        let fairness = if idle || n == 0 {
            Fairness::default()
        } else {
            Fairness {
                min,
                max,
                stalled,
                mean: sum as f64 / n as f64,
                connections: n,
            }
        };
        let per_s = |v: f64| {
            if self.window_s > 0.0 {
                v / self.window_s
            } else {
                0.0
            }
        };
        let server = self.server.map(|mut s| {
            s.cpu_us_per_msg = if self.messages > 0 {
                s.cpu_s * 1e6 / self.messages as f64
            } else {
                0.0
            };
            if let (true, Some(before)) = (idle, baseline) {
                let added = s.rss_kib.saturating_sub(before.rss_kib) * 1024;
                s.idle_bytes_per_conn = Some(added as f64 / self.connections_up.max(1) as f64);
            }
            s
        });
        Report {
            kind: kind_name(options.kind),
            addr: options.addr.to_string(),
            connections: options.connections.get(),
            connections_up: self.connections_up,
            connect_s: self.connect_s,
            size: options.size.get(),
            pipeline: options.pipeline.get(),
            payload: options.payload_name(),
            mode: options.server_mode().to_string(),
            window_s: self.window_s,
            messages: self.messages,
            msgs_per_s: per_s(self.messages as f64),
            mb_per_s: per_s(self.reply_bytes as f64) / 1e6,
            latency_us: report::Latency::from_histogram(&histogram),
            fairness,
            ok: errors.total() == 0,
            errors,
            error_samples: samples,
            server,
            latency_histogram: Some(histogram),
            ..Report::default()
        }
    }

    /// The latency histogram, rebuilt from its buckets (each bucket's value
    /// lands in the same bucket again, so nothing moves).
    fn histogram(&self) -> Histogram<u64> {
        let mut h = super::new_histogram();
        for &(value, count) in &self.latency {
            let _ = h.record_n(value, count);
        }
        h
    }

    /// Adds `other`'s figures to these.
    fn add(&mut self, other: Partial, who: &str) {
        self.connections_up += other.connections_up;
        // The parts connect at the same time: the run's connect phase ends
        // with its slowest part.
        self.connect_s = self.connect_s.max(other.connect_s);
        self.messages += other.messages;
        self.reply_bytes += other.reply_bytes;
        self.window_s = self.window_s.max(other.window_s);
        let mut h = self.histogram();
        let _ = h.add(other.histogram());
        self.latency = h
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect();
        let (a, b) = (self.fairness, other.fairness);
        self.fairness = match (a.4, b.4) {
            (0, _) => b,
            (_, 0) => a,
            _ => (a.0.min(b.0), a.1.max(b.1), a.2 + b.2, a.3 + b.3, a.4 + b.4),
        };
        self.errors += &other.errors;
        for s in other.samples {
            if self.samples.len() < MAX_SAMPLES {
                self.samples.push(format!("{who}: {s}"));
            }
        }
        self.server = self.server.take().or(other.server);
        self.failed.extend(other.failed);
    }
}

/// The parts' results added up; a part that failed is named in `failed`.
fn merge(results: Vec<Result<Partial, String>>, what: &str) -> Partial {
    let mut total = Partial::default();
    for (i, result) in results.into_iter().enumerate() {
        match result {
            Ok(p) => total.add(p, &format!("{what} {i}")),
            Err(e) => total.failed.push(format!("{what} {i} failed: {e}")),
        }
    }
    total
}

/// A worker process's output: its figures as one line for the coordinator.
pub(super) fn print_part(report: &Report) -> Result<(), BenchError> {
    let partial = Partial::from_report(report);
    let mut out = std::io::stdout().lock();
    writeln!(out, "result {}", serde_json::to_string(&partial)?)
        .and_then(|()| out.flush())
        .map_err(BenchError::io("write the result"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Options {
        Options::try_parse_from(std::iter::once("upcase-bench").chain(args.iter().copied()))
            .unwrap()
    }

    #[test]
    fn parts_cover_every_connection_once() {
        for (total, n) in [(100_000, 6), (7, 3), (3, 3), (10, 1)] {
            let mut next = 0;
            for index in 0..n {
                let (a, b) = Part { index, count: n }.range(total);
                assert_eq!(a, next);
                assert!(b > a);
                next = b;
            }
            assert_eq!(next, total);
        }
        let p = Part { index: 1, count: 3 };
        assert_eq!(p.sub(1, 2), Part { index: 3, count: 6 });
        assert_eq!("2/6".parse(), Ok(Part { index: 2, count: 6 }));
        for bad in ["6/6", "1", "a/2", "1/0"] {
            assert!(bad.parse::<Part>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_plan_follows_the_descriptor_limit() {
        let per = per_process();
        let p = Plan::new(&parse(&["idle", "-c", "100000"])).unwrap();
        assert_eq!(p.workers, 100_000usize.div_ceil(per));
        assert_eq!(p.sources, 50);
        let p = Plan::new(&parse(&[
            "tcp",
            "-c",
            "2",
            "--workers",
            "5",
            "--threads",
            "4",
        ]))
        .unwrap();
        assert_eq!((p.workers, p.threads, p.sources), (2, 1, 1));
        let p = Plan::new(&parse(&["tcp", "-c", "10"])).unwrap();
        assert_eq!((p.workers, p.threads), (1, 1));
        // Unsplit, --rate and --timeline run as ever, and churn is one loop.
        for args in [
            &["tcp", "-c", "4", "--rate", "100", "--timeline", "t.csv"][..],
            &["churn", "-c", "4", "--workers", "1", "--threads", "1"],
        ] {
            let p = Plan::new(&parse(args)).unwrap();
            assert_eq!((p.workers, p.threads), (1, 1), "{args:?}");
        }
        for args in [
            &["udp", "--workers", "2"][..],
            &["udp", "--threads", "2"],
            &["udp", "--source-addrs", "2"],
            &["tcp", "--workers", "0"],
            &["tcp", "--source-addrs", "3", "--addr", "192.0.2.1:7"],
            &["churn", "--workers", "2"],
            &["churn", "--threads", "2"],
            &["churn", "--source-addrs", "2"],
            &["tcp", "-c", "4", "--rate", "100", "--workers", "2"],
            &["tcp", "-c", "4", "--rate", "100", "--threads", "2"],
            &["tcp", "-c", "4", "--timeline", "t.csv", "--threads", "2"],
            &["idle", "-c", "4", "--timeline", "t.csv", "--workers", "2"],
        ] {
            assert!(
                matches!(Plan::new(&parse(args)), Err(BenchError::Usage(_))),
                "{args:?}"
            );
        }
    }

    #[test]
    fn shares_split_the_per_run_limits() {
        let o = parse(&[
            "tcp",
            "-c",
            "10",
            "--messages",
            "100",
            "--connect-rate",
            "7",
            "--server-pid",
            "1",
        ]);
        let parts: Vec<Options> = (0..3)
            .map(|index| share(&o, Part { index, count: 3 }))
            .collect();
        let sum = |f: &dyn Fn(&Options) -> u64| parts.iter().map(f).sum::<u64>();
        assert_eq!(sum(&|p| p.connections.get() as u64), 10);
        assert_eq!(sum(&|p| p.messages.map_or(0, |m| m.get())), 100);
        assert_eq!(sum(&|p| p.connect_rate), 7);
        assert_eq!(
            parts.iter().map(|p| p.first_connection).collect::<Vec<_>>(),
            [0, 3, 6]
        );
        assert_eq!(
            parts.iter().map(|p| p.server_pid).collect::<Vec<_>>(),
            [Some(1), None, None]
        );
    }

    /// Merged figures are the exact sums, and the merged histogram's
    /// percentiles are those of every sample together, not an average.
    #[test]
    fn merging_adds_counts_and_histograms() {
        let part = |values: &[u64], errors: u64| {
            let mut h = super::super::new_histogram();
            for &v in values {
                h.record(v).unwrap();
            }
            let report = Report {
                connections_up: values.len(),
                messages: values.len() as u64,
                window_s: 1.0,
                mb_per_s: values.len() as f64 * 64.0 / 1e6,
                latency_histogram: Some(h),
                fairness: Fairness::from_counts(std::iter::repeat_n(1, values.len())),
                errors: Errors {
                    reset: errors,
                    ..Errors::default()
                },
                ..Report::default()
            };
            // Through JSON, as from a worker process.
            let json = serde_json::to_string(&Partial::from_report(&report)).unwrap();
            Ok(serde_json::from_str::<Partial>(&json).unwrap())
        };
        let fast: Vec<u64> = (1..=90).map(|i| i * 1000).collect();
        let slow: Vec<u64> = (1..=10).map(|i| i * 1_000_000).collect();
        let merged = merge(
            vec![part(&fast, 0), part(&slow, 2), Err("boom".into())],
            "worker",
        );
        let o = parse(&["tcp", "-c", "100"]);
        let r = merged.into_report(&o, None);
        assert_eq!((r.connections_up, r.messages), (100, 100));
        assert_eq!(r.msgs_per_s, 100.0);
        assert_eq!(r.mb_per_s, 100.0 * 64.0 / 1e6);
        assert_eq!((r.errors.reset, r.errors.other, r.ok), (2, 1, false));
        assert!(r.error_samples.iter().any(|s| s == "worker 2 failed: boom"));
        assert_eq!(
            (r.fairness.min, r.fairness.max, r.fairness.mean),
            (1, 1, 1.0)
        );
        // 90 fast and 10 slow: p50 is fast, p99 slow; an average of the
        // two parts' p50s would be neither.
        let mut all = super::super::new_histogram();
        for &v in fast.iter().chain(&slow) {
            all.record(v).unwrap();
        }
        let want = report::Latency::from_histogram(&all);
        assert_eq!(r.latency_us.p50, want.p50);
        assert_eq!(r.latency_us.p99, want.p99);
        assert_eq!(r.latency_us.max, want.max);
        assert!(r.latency_us.p50 < 100.0 && r.latency_us.p99 > 9000.0, "{r}");
    }

    #[test]
    fn start_times_cross_processes_unchanged() {
        let at = Instant::now() + Duration::from_millis(500);
        let before = Instant::now();
        let back = instant_at(monotonic_ns(at));
        // Off by no more than the clock reads in between took (the same
        // clock read twice), however slow the machine.
        let spent = before.elapsed();
        let off = if back > at { back - at } else { at - back };
        assert!(off <= spent, "{off:?} > {spent:?}");
    }
}
