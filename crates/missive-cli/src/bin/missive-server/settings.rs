//! The server's configuration file (`--config FILE`, TOML): the same keys
//! as the flags (`max-frame = 262144`, `ping-interval = "30s"`), read into
//! the same [`Args`]. Flags (and their environment variables) override the
//! file, the file overrides the defaults; `--print-config` shows the result.

use super::{Args, format_duration, parse_duration};
use clap::{CommandFactory, FromArgMatches};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Exit status of a usage error (clap's), also for a bad configuration file.
const USAGE_ERROR: u8 = 2;

/// Why a configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// Not TOML, an unknown key or a bad value: the message names the key
    /// and the line.
    #[error("{path}: {source}")]
    Invalid {
        path: String,
        source: toml::de::Error,
    },
}

/// Reads the settings of a configuration file.
pub fn read_file(path: &Path) -> Result<Args, ConfigFileError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: name.clone(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigFileError::Invalid { path: name, source })
}

/// The command line with the `[default: …]` of every setting in its help,
/// taken from [`Args::with_defaults`]: the defaults are written once.
pub fn command() -> clap::Command {
    let unset = table(&Args::default()).expect("no paths");
    let all = Args {
        cluster: true,
        ..Args::default()
    }
    .with_defaults();
    let mut command = Args::command();
    for (key, value) in table(&all).expect("the default paths are UTF-8") {
        if unset.contains_key(&key) {
            continue;
        }
        let id = key.replace('-', "_");
        let shown = text_of(value);
        command = command.mut_arg(id, |arg| {
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            arg.help(format!("{help} [default: {shown}]"))
        });
    }
    command
}

/// The settings of the command line (and the environment) over those of
/// `--config`, all checked by the command line's rules. On a usage error
/// or a bad file: the message printed, and the exit status (2; 0 for
/// --help and --version).
pub fn from_command_line() -> Result<Args, ExitCode> {
    let arguments: Vec<OsString> = std::env::args_os().collect();
    let Some(path) = config_path(&arguments) else {
        return parse(arguments).map_err(reported);
    };
    let file = read_file(&path).map_err(|e| {
        eprintln!("missive-server: {e}");
        ExitCode::from(USAGE_ERROR)
    })?;
    parse_over_file(&file, arguments).map_err(|e| {
        eprintln!("missive-server: with {}:", path.display());
        reported(e)
    })
}

/// The `--config` (or MISSIVE_CONFIG) of `arguments`, if any: read
/// leniently, as the rest may need the file (`--lease-ttl` on the command
/// line, `cluster = true` in the file).
fn config_path(arguments: &[OsString]) -> Option<PathBuf> {
    let matches = command()
        .ignore_errors(true)
        .try_get_matches_from(arguments)
        .ok()?;
    matches.get_one::<PathBuf>("config").cloned()
}

/// Parses the command line `arguments` (the program's name first) over
/// the settings of `file`: the file's settings go first, as arguments, so
/// the flags' rules check them all together and a flag overrides the
/// file's value (a list on the command line replaces the file's). The
/// file gives only what the environment does not.
fn parse_over_file(file: &Args, arguments: Vec<OsString>) -> Result<Args, clap::Error> {
    let mut arguments = arguments.into_iter();
    let program = arguments.next().unwrap_or_else(|| "missive-server".into());
    let from_file = file
        .to_arguments()
        .map_err(|e| command().error(clap::error::ErrorKind::InvalidValue, e))?;
    let file_ends = from_file.len();
    let all = std::iter::once(program)
        .chain(from_file.into_iter().map(OsString::from))
        .chain(arguments);
    let mut matches = command()
        .args_override_self(true)
        .try_get_matches_from(all)?;
    let origins_of_flags: Vec<String> = match (
        matches.indices_of("ws_allowed_origin"),
        matches.get_many::<String>("ws_allowed_origin"),
    ) {
        (Some(indices), Some(origins)) => indices
            .zip(origins)
            .filter(|(index, _)| *index > file_ends)
            .map(|(_, origin)| origin.clone())
            .collect(),
        _ => Vec::new(),
    };
    let mut args = Args::from_arg_matches_mut(&mut matches)?;
    if !origins_of_flags.is_empty() {
        args.ws_allowed_origin = origins_of_flags;
    }
    Ok(args)
}

/// Prints clap's message; its exit status.
fn reported(error: clap::Error) -> ExitCode {
    let _ = error.print();
    u8::try_from(error.exit_code()).map_or(ExitCode::from(USAGE_ERROR), ExitCode::from)
}

fn parse<I, T>(arguments: I) -> Result<Args, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let mut matches = command().try_get_matches_from(arguments)?;
    Args::from_arg_matches_mut(&mut matches)
}

/// The settings as a TOML table (the unset ones left out); an error for a
/// path that is not UTF-8.
fn table(args: &Args) -> Result<toml::Table, toml::ser::Error> {
    toml::Table::try_from(args)
}

impl Args {
    /// The settings as a configuration file.
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }

    /// The settings as command-line arguments, but for those the
    /// environment gives (clap reads them, over the file's).
    fn to_arguments(&self) -> Result<Vec<String>, toml::ser::Error> {
        let command = Args::command();
        let in_environment = |id: &str| {
            command
                .get_arguments()
                .find(|arg| arg.get_id() == id)
                .and_then(clap::Arg::get_env)
                .is_some_and(|name| std::env::var_os(name).is_some())
        };
        let mut arguments = Vec::new();
        for (key, value) in table(self)? {
            if in_environment(&key.replace('-', "_")) {
                continue;
            }
            let flag = format!("--{key}");
            match value {
                toml::Value::Boolean(true) => arguments.push(flag),
                toml::Value::Boolean(false) => {}
                toml::Value::Array(values) => {
                    for value in values {
                        arguments.push(flag.clone());
                        arguments.push(text_of(value));
                    }
                }
                value => {
                    arguments.push(flag);
                    arguments.push(text_of(value));
                }
            }
        }
        Ok(arguments)
    }
}

/// A value as a flag takes it.
fn text_of(value: toml::Value) -> String {
    match value {
        toml::Value::String(text) => text,
        other => other.to_string(),
    }
}

/// `Option<Duration>` as the flags write it (`"30s"`, `"250ms"`), read by
/// the flags' parser.
pub mod duration_text {
    use super::{Duration, format_duration, parse_duration};
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(duration) => s.serialize_str(&format_duration(*duration)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text).map(Some).map_err(D::Error::custom)
    }
}

/// Reads an `Option<T>` and checks it with the flag's own check.
///
/// The file's values are checked again by clap once turned into arguments
/// ([`parse_over_file`]), on purpose: clap's message names the flag but not
/// the file's line (the arguments made from the file carry no position),
/// while this check, run by the TOML reader, names the key and the line.
/// The rule itself is written once (the `check_*` function both call).
pub fn checked<'de, D, T>(d: D, check: fn(T) -> Result<T, String>) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    use serde::de::Error;
    check(T::deserialize(d)?)
        .map(Some)
        .map_err(D::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(arguments: &[&str]) -> Args {
        parse(std::iter::once("missive-server").chain(arguments.iter().copied())).unwrap()
    }

    #[test]
    fn printed_settings_read_back_the_same() {
        let args = args(&[
            "--plaintext",
            "--ping-interval",
            "250ms",
            "--ws-listen",
            "127.0.0.1:0",
            "--ws-allowed-origin",
            "https://a.example",
            "--ws-allowed-origin",
            "https://b.example",
            "--sender-share",
            "20",
        ])
        .with_defaults();
        let printed = args.to_toml().unwrap();
        let read: Args = toml::from_str(&printed).unwrap();
        assert_eq!(read, args, "{printed}");
        assert!(printed.contains("ping-interval = \"250ms\""), "{printed}");
        assert!(printed.contains("message-ttl = \"30d\""), "{printed}");
        let reparsed = over_file(&printed, &[]).unwrap();
        assert_eq!(reparsed, args, "the file's values pass the flags' rules");
    }

    #[test]
    fn defaults_printed_without_a_file() {
        let printed = Args::default().with_defaults().to_toml().unwrap();
        let defaults = super::super::ServerConfig::default();
        assert!(printed.contains("listen = \"127.0.0.1:7878\""), "{printed}");
        assert!(
            printed.contains(&format!("max-frame = {}", defaults.max_frame)),
            "{printed}"
        );
        assert!(printed.contains("ping-interval = \"30s\""), "{printed}");
        assert!(
            !printed.contains("shards"),
            "cluster settings only for a cluster node: {printed}"
        );
    }

    #[test]
    fn the_help_shows_the_defaults() {
        let help = command().render_long_help().to_string();
        for shown in [
            "[default: 127.0.0.1:7878]",
            "[default: 262144]",
            "[default: 30s]",
            "[default: 30d]",
            "[default: 256]",
            "[default: 6s]",
            "[default: 8388608]",
        ] {
            assert!(help.contains(shown), "{shown} missing in\n{help}");
        }
    }

    /// The settings of `arguments` over those of the file `text`.
    fn over_file(text: &str, arguments: &[&str]) -> Result<Args, clap::Error> {
        let file: Args = toml::from_str(text).unwrap();
        let arguments = std::iter::once("missive-server").chain(arguments.iter().copied());
        parse_over_file(&file, arguments.map(OsString::from).collect())
    }

    #[test]
    fn flags_override_the_file() {
        let file = "window = 8\nsend-rate = 5\nws-listen = \"127.0.0.1:0\"\n\
                    ws-allowed-origin = [\"https://file.example\"]\n";
        let merged = over_file(
            file,
            &[
                "--window",
                "9",
                "--ws-listen",
                "127.0.0.1:1",
                "--ws-allowed-origin",
                "https://flag.example",
            ],
        )
        .unwrap();
        assert_eq!(merged.window, Some(9));
        assert_eq!(merged.send_rate, Some(5), "from the file");
        assert_eq!(merged.ws_listen.as_deref(), Some("127.0.0.1:1"));
        assert_eq!(merged.ws_allowed_origin, ["https://flag.example"]);
        let kept = over_file(file, &["--plaintext"]).unwrap();
        assert_eq!(kept.ws_allowed_origin, ["https://file.example"]);
        assert!(kept.plaintext);
    }

    #[test]
    fn flags_may_need_the_file() {
        let cluster = "cluster = true\nnode-id = \"n1\"\nadvertise = \"127.0.0.2:7878\"\n\
                       postgres = \"postgres://h/db\"\nnats = \"nats://127.0.0.1:4222\"\n";
        let args = over_file(cluster, &["--lease-ttl", "3s", "--shards", "64"]).unwrap();
        assert_eq!(args.lease_ttl(), Duration::from_secs(3));
        assert_eq!(args.shard_count(), 64);
        let without = over_file("window = 8\n", &["--lease-ttl", "3s"]).unwrap_err();
        assert_eq!(
            without.kind(),
            clap::error::ErrorKind::MissingRequiredArgument
        );
        let bad_flag = over_file(cluster, &["--lease-ttl", "soon"]).unwrap_err();
        assert_eq!(bad_flag.kind(), clap::error::ErrorKind::ValueValidation);
    }

    #[test]
    fn an_unknown_key_is_named() {
        let error = toml::from_str::<Args>("listen = \"127.0.0.1:1\"\nmax-frames = 4\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("max-frames"), "{error}");
        assert!(error.contains("line 2"), "{error}");
    }

    #[test]
    fn a_bad_value_is_named() {
        for (text, key) in [
            ("ping-interval = \"5y\"", "ping-interval"),
            ("shards = 100", "shards"),
            ("sender-share = 0", "sender-share"),
            ("window = \"many\"", "window"),
        ] {
            let error = toml::from_str::<Args>(&format!("plaintext = true\n{text}\n"))
                .unwrap_err()
                .to_string();
            assert!(error.contains(key), "{text}: {error}");
            assert!(error.contains("line 2"), "{text}: {error}");
        }
    }

    #[test]
    fn the_file_follows_the_flags_rules() {
        let error = over_file("memory = true\npostgres = \"postgres://h/db\"\n", &[]).unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::ArgumentConflict);
        let error = over_file("memory = true\n", &["--postgres", "postgres://h/db"]).unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::ArgumentConflict);
    }
}
