//! Logging: `log` + `env_logger` to stderr.
//!
//! `RUST_LOG`, when set, decides everything (module filters included) and the
//! config's `log_level` is ignored. Otherwise the logger lets every record
//! through and the level is the global `log::max_level`, which a reload can
//! change live.
//!
//! When stderr is the journal (systemd sets `JOURNAL_STREAM` to the
//! `device:inode` of the stream it connected to stderr), each line starts
//! with its syslog priority (`<3>` error … `<7>` trace), which journald
//! strips and records, so `journalctl -p warning` filters them; there is no
//! timestamp, since journald adds its own. Elsewhere: env_logger's format.

use std::io::Write;

use log::{Level, LevelFilter};

/// Whether the level is under the config's control (no `RUST_LOG`).
#[derive(Debug, Clone, Copy)]
pub struct LogControl {
    from_config: bool,
}

/// Installs the logger. Call once, early.
pub fn init(level: LevelFilter) -> LogControl {
    let from_env = std::env::var_os("RUST_LOG").is_some_and(|v| !v.is_empty());
    let mut builder = env_logger::Builder::new();
    if from_env {
        builder.parse_env("RUST_LOG");
    } else {
        builder.filter_level(LevelFilter::Trace);
    }
    if stderr_is_journal() {
        builder.format(|buf, record| {
            writeln!(
                buf,
                "<{}>{}",
                syslog_priority(record.level()),
                record.args()
            )
        });
    }
    // A second init (tests in one process) keeps the first logger.
    let _ = builder.try_init();
    let control = LogControl {
        from_config: !from_env,
    };
    control.set_level(level);
    control
}

impl LogControl {
    /// Applies the config's `log_level`, unless `RUST_LOG` rules.
    pub fn set_level(&self, level: LevelFilter) {
        if self.from_config {
            log::set_max_level(level);
        }
    }
}

/// The syslog priority journald reads from a `<N>` prefix.
pub fn syslog_priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// Whether stderr is the stream systemd connected to the journal: the
/// variable alone is not enough, since it is inherited by processes whose
/// stderr was redirected elsewhere.
pub fn stderr_is_journal() -> bool {
    let Some(expected) = std::env::var("JOURNAL_STREAM").ok() else {
        return false;
    };
    let Some((dev, ino)) = expected.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    rustix::fs::fstat(std::io::stderr()).is_ok_and(|st| st.st_dev == dev && st.st_ino == ino)
}
