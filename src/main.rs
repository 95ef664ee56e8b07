use std::fs::File;
use std::io::{self, BufReader};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use consent_webhooks::cli::{Cli, Command, DeriveArgs};
use consent_webhooks::ops;

// The pipeline allocates many small short-lived buffers; mimalloc is markedly faster at that
// than glibc's allocator (see the derive benchmark in the README).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Derive(args) => derive(args),
    }
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
