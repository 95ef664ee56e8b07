//! An operator command (`redrive`, `resend`, ...) run to completion, and its printed summary.

use std::path::Path;
use std::time::Duration;

/// What a command printed and how it ended.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// A number from the summary, e.g. `count("delivered")`.
    pub fn count(&self, name: &str) -> u64 {
        self.line(name)
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}", self.stdout))
    }

    /// A summary line's value, e.g. `line("failed again by reason")`.
    pub fn line(&self, name: &str) -> String {
        let prefix = format!("  {name}: ");
        self.stdout
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {name:?} in the summary:\n{}", self.stdout))
            .to_owned()
    }

    pub fn assert_success(&self) {
        assert_eq!(
            self.code,
            Some(0),
            "the command failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
    }
}

/// Runs `consent-webhooks COMMAND --config CONFIG ARGS...` to completion (two minutes at most).
pub async fn run(command: &str, config: &Path, args: &[&str]) -> Run {
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_consent-webhooks"))
            .args(["--log-format", "json", command, "--config"])
            .arg(config)
            .args(args)
            .env("RUST_LOG", "info,consent_webhooks=debug")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{command} ends within two minutes"))
    .unwrap_or_else(|e| panic!("run consent-webhooks {command}: {e}"));
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
