//! Logging: `log` + `env_logger` to stderr (journald picks it up there).
//!
//! `RUST_LOG`, when set, decides everything (module filters included) and the
//! config's `log_level` is ignored. Otherwise the logger lets every record
//! through and the level is the global `log::max_level`, which a reload can
//! change live.

use log::LevelFilter;

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
