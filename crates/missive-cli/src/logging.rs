//! The log set-up of both binaries (`#[path]`-included by each): logs go to
//! standard error, filtered by `RUST_LOG`, as text (coloured only on a
//! terminal) or as JSON lines for a log collector.

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// How log lines are written (`--log-format`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// One line of text an event; ANSI colours only when standard error is
    /// a terminal and `NO_COLOR` is unset or empty.
    #[default]
    Text,
    /// One JSON object a line: `timestamp`, `level`, `target`, `message`
    /// and the event's other fields at the top level.
    Json,
}

/// Installs the global subscriber: `RUST_LOG` if set and valid, else
/// `default_level` (e.g. `info`).
pub fn init(format: LogFormat, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(colours_wanted()).init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Colours on a terminal only, and never with `NO_COLOR` set
/// (<https://no-color.org>).
fn colours_wanted() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    std::io::stderr().is_terminal() && !no_color
}
