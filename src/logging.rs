//! Leveled logging to stderr. Names of secrets may appear at `debug`;
//! values never appear at any level.

use tracing::level_filters::LevelFilter;

/// Parses `error|warn|info|debug|trace|off`.
pub fn parse_level(s: &str) -> Option<LevelFilter> {
    s.parse().ok()
}

/// Installs the stderr logger for `prog` at `level`.
pub fn init(level: LevelFilter) {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        .without_time()
        .init();
}
