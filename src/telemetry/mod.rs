//! Telemetry: logs ([`init_logging`]), Prometheus [`metrics`] (with [`process`] metrics), and the
//! [`health`] server.
//!
//! Logs: `tracing`, JSON lines when stderr is not a terminal (or with `--log-format json`),
//! readable text on a terminal. Level from `RUST_LOG` (default `info`).
//!
//! Guarantee: nothing here logs payloads or secrets; modules log ids, codes and counts.

pub mod health;
pub mod metrics;
pub mod process;

pub use metrics::Metrics;

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// JSON when stderr is not a terminal, text otherwise.
    Auto,
    Json,
    Text,
}

pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        LogFormat::Auto => !std::io::stderr().is_terminal(),
        LogFormat::Json => true,
        LogFormat::Text => false,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        let _ = builder.json().with_current_span(true).try_init();
    } else {
        let _ = builder.try_init();
    }
}
