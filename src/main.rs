use std::fs::File;
use std::io::{self, BufReader};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use consent_webhooks::cli::{self, CheckConfigArgs, Cli, Command, DeriveArgs, RunArgs};
use consent_webhooks::{config, ops, pipeline, telemetry};
use tokio_util::sync::CancellationToken;

// The pipeline allocates many small short-lived buffers; mimalloc is markedly faster at that
// than glibc's allocator (see the derive benchmark in the README).
#[global_allocator]
static GLOBAL: consent_webhooks::allocator::Mimalloc = consent_webhooks::allocator::Mimalloc;

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Derive(args) => derive(args),
        Command::CheckConfig(args) => check_config(args),
        Command::Replay(args) => {
            telemetry::init_logging(cli.log_format);
            ops::replay::run(args)
        }
        Command::Redrive(args) => {
            telemetry::init_logging(cli.log_format);
            ops::redrive::run(args)
        }
        Command::Resend(args) => {
            telemetry::init_logging(cli.log_format);
            ops::resend::run(args)
        }
        Command::Organizations(args) => {
            telemetry::init_logging(cli.log_format);
            ops::organizations::run(args)
        }
        Command::Run(args) => {
            telemetry::init_logging(cli.log_format);
            run(args)
        }
    }
}

fn check_config(args: CheckConfigArgs) -> anyhow::Result<ExitCode> {
    let path = args
        .file
        .or(args.config)
        .expect("clap requires one of them");
    match cli::load_settings(&path, args.brokers.as_deref(), None) {
        Ok(settings) => {
            // Warnings do not fail the check: the settings load, they just will not work as
            // the operator probably expects.
            for warning in config::warnings(&settings) {
                eprintln!("warning: {warning}");
            }
            print!("{}", config::render_redacted(&settings));
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprintln!("invalid configuration: {error}");
            Ok(ExitCode::from(2))
        }
    }
}

fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let settings = match args.config.load_or_exit() {
        Ok(settings) => settings,
        Err(usage) => return Ok(usage),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("consent-webhooks")
        .build()?;
    runtime.block_on(async {
        let stop = CancellationToken::new();
        tokio::spawn(stop_on_signal(stop.clone()));
        pipeline::run(settings, stop).await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Cancels `stop` on SIGTERM (Kubernetes) or SIGINT (Ctrl-C).
async fn stop_on_signal(stop: CancellationToken) {
    let mut signals = match consent_webhooks::signals::StopSignals::install() {
        Ok(signals) => signals,
        Err(error) => {
            tracing::error!(%error, "cannot install signal handlers");
            return;
        }
    };
    let signal = signals.next().await;
    tracing::info!(signal, "draining");
    stop.cancel();
}

fn derive(args: DeriveArgs) -> anyhow::Result<ExitCode> {
    let stdout = io::stdout().lock();
    let stderr = io::stderr().lock();
    let out = io::BufWriter::with_capacity(1 << 16, stdout);
    let rules = args.rules.rules();
    let summary = match args.file.as_deref() {
        Some(path) if path.as_os_str() != "-" => {
            let file =
                File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
            ops::derive::run(BufReader::with_capacity(1 << 16, file), out, stderr, &rules)
        }
        _ => ops::derive::run(io::stdin().lock(), out, stderr, &rules),
    };
    match summary {
        Ok(summary) if summary.rejected > 0 => Ok(ExitCode::FAILURE),
        Ok(_) => Ok(ExitCode::SUCCESS),
        // A closed stdout (e.g. `| head`) ends the run quietly, like other Unix filters.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e).context("derive failed"),
    }
}
