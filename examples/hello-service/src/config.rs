//! Settings from the command line and the environment.

use std::path::PathBuf;
use std::time::Duration;

use crate::fail;

pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";
pub const DEFAULT_WORKERS: usize = 4;

/// How the service runs.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Address to listen on (`--addr`, `HELLO_ADDR`).
    pub addr: String,
    /// File to write the bound address to once listening (`--addr-file`, `HELLO_ADDR_FILE`).
    pub addr_file: Option<PathBuf>,
    /// Version reported by `/` and `/metrics` (`HELLO_VERSION`, else the crate's version).
    pub version: String,
    /// Share of `/` requests that answer 500 (`HELLO_FAIL_RATE`).
    pub fail_rate: f64,
    /// Connection-handling threads (`HELLO_WORKERS`).
    pub workers: usize,
    /// Latency added to each `GET /` response (`HELLO_DELAY_MS`).
    pub delay: Duration,
}

impl Config {
    /// Settings for tests: an ephemeral loopback port and no failures.
    pub fn for_tests() -> Config {
        Config {
            addr: "127.0.0.1:0".into(),
            addr_file: None,
            version: "0.0.0-test".into(),
            fail_rate: 0.0,
            workers: 2,
            delay: Duration::ZERO,
        }
    }
}

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    Serve(Config),
    Help,
    Version(String),
}

pub const USAGE: &str = "\
hello-service: a tiny HTTP service (GET /, /health, /metrics)

Usage: hello-service [--addr HOST:PORT] [--addr-file PATH]

Options:
  --addr HOST:PORT   address to listen on (env HELLO_ADDR, default 127.0.0.1:8080)
  --addr-file PATH   write the bound address there once listening (env HELLO_ADDR_FILE)
  -V, --version      print the version
  -h, --help         print this help

Environment:
  HELLO_VERSION      version to report instead of the built one
  HELLO_FAIL_RATE    0.0-1.0: share of `GET /` requests that answer 500
  HELLO_WORKERS      connection-handling threads (default 4)
  HELLO_DELAY_MS     milliseconds (0-60000) added to each `GET /` response (default 0)
";

/// Reads the arguments (without the program name) and the environment through `env`.
pub fn parse(
    args: impl IntoIterator<Item = String>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Command, String> {
    let non_empty = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let version = non_empty("HELLO_VERSION")
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string());
    let mut addr = non_empty("HELLO_ADDR");
    let mut addr_file = non_empty("HELLO_ADDR_FILE").map(PathBuf::from);

    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_string(), Some(value.to_string()))
            }
            _ => (arg.clone(), None),
        };
        let mut value = |flag: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value\n\n{USAGE}"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version(version)),
            "--addr" => addr = Some(value("--addr")?),
            "--addr-file" => addr_file = Some(PathBuf::from(value("--addr-file")?)),
            other => return Err(format!("unknown argument `{other}`\n\n{USAGE}")),
        }
    }

    let fail_rate = fail::parse_rate(&env("HELLO_FAIL_RATE").unwrap_or_default())?;
    let workers = match non_empty("HELLO_WORKERS") {
        None => DEFAULT_WORKERS,
        Some(w) => match w.trim().parse::<usize>() {
            Ok(n) if (1..=256).contains(&n) => n,
            _ => {
                return Err(format!(
                    "HELLO_WORKERS must be a number from 1 to 256, not `{w}`"
                ));
            }
        },
    };
    let delay = parse_delay(&env("HELLO_DELAY_MS").unwrap_or_default())?;
    Ok(Command::Serve(Config {
        addr: addr.unwrap_or_else(|| DEFAULT_ADDR.to_string()),
        addr_file,
        version,
        fail_rate,
        workers,
        delay,
    }))
}

/// The most `HELLO_DELAY_MS` accepts: a minute.
pub const MAX_DELAY_MS: u64 = 60_000;

/// Parses a delay in whole milliseconds from 0 to [`MAX_DELAY_MS`] (an empty string means 0).
pub fn parse_delay(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Duration::ZERO);
    }
    match text.parse::<u64>() {
        Ok(ms) if ms <= MAX_DELAY_MS => Ok(Duration::from_millis(ms)),
        _ => Err(format!(
            "HELLO_DELAY_MS must be a whole number of milliseconds from 0 to {MAX_DELAY_MS}, not `{text}`"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Command, String> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(args.iter().map(|a| a.to_string()), |k| env.get(k).cloned())
    }

    fn serve(args: &[&str], env: &[(&str, &str)]) -> Config {
        match run(args, env) {
            Ok(Command::Serve(config)) => config,
            other => panic!("expected a config, got {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let c = serve(&[], &[]);
        assert_eq!(c.addr, DEFAULT_ADDR);
        assert_eq!(c.addr_file, None);
        assert_eq!(c.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(c.fail_rate, 0.0);
        assert_eq!(c.workers, DEFAULT_WORKERS);
        assert_eq!(c.delay, Duration::ZERO);
    }

    #[test]
    fn environment_and_flags() {
        let env = [
            ("HELLO_ADDR", "0.0.0.0:9000"),
            ("HELLO_ADDR_FILE", "/tmp/addr"),
            ("HELLO_VERSION", "2.0.0"),
            ("HELLO_FAIL_RATE", "0.5"),
            ("HELLO_WORKERS", "3"),
            ("HELLO_DELAY_MS", "250"),
        ];
        let c = serve(&[], &env);
        assert_eq!(c.addr, "0.0.0.0:9000");
        assert_eq!(c.addr_file, Some(PathBuf::from("/tmp/addr")));
        assert_eq!(c.version, "2.0.0");
        assert_eq!(c.fail_rate, 0.5);
        assert_eq!(c.workers, 3);
        assert_eq!(c.delay, Duration::from_millis(250));
        // Flags win over the environment.
        assert_eq!(serve(&["--addr", "127.0.0.1:1"], &env).addr, "127.0.0.1:1");
        assert_eq!(serve(&["--addr=127.0.0.1:2"], &env).addr, "127.0.0.1:2");
        let c = serve(&["--addr-file", "/x"], &env);
        assert_eq!(c.addr_file, Some(PathBuf::from("/x")));
    }

    #[test]
    fn help_version_and_errors() {
        assert_eq!(run(&["--help"], &[]), Ok(Command::Help));
        assert_eq!(
            run(&["-V"], &[("HELLO_VERSION", "9.9.9")]),
            Ok(Command::Version("9.9.9".into()))
        );
        assert!(run(&["--addr"], &[]).is_err());
        assert!(run(&["--bogus"], &[]).is_err());
        assert!(run(&[], &[("HELLO_FAIL_RATE", "2")]).is_err());
        assert!(run(&[], &[("HELLO_WORKERS", "0")]).is_err());
        assert!(run(&[], &[("HELLO_DELAY_MS", "-1")]).is_err());
    }

    #[test]
    fn delay_values() {
        assert_eq!(parse_delay(""), Ok(Duration::ZERO));
        assert_eq!(parse_delay(" 0 "), Ok(Duration::ZERO));
        assert_eq!(parse_delay("1500"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_delay("60000"), Ok(Duration::from_secs(60)));
        for bad in ["-5", "1.5", "abc", "60001", "1e3", "99999999999999999999"] {
            let err = parse_delay(bad).unwrap_err();
            assert!(err.contains("HELLO_DELAY_MS"), "{bad}: {err}");
            assert!(err.contains(bad), "{bad}: {err}");
        }
    }
}
