//! The README's main command, `scripts/demo.sh`, end to end: on the shared test broker, with the
//! binary cargo built for this test. Every sample webhook must arrive exactly once and carry a
//! signature the Standard Webhooks reference implementation (Python `standardwebhooks`) verifies.

mod support;

use std::fs::File;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::kafka;

/// The sample records of deploy/sample-records.jsonl yield this many webhooks.
const EXPECTED: usize = 14;

/// First run included: a venv with `standardwebhooks` from PyPI, topic creation and the
/// console producer (JVMs), the service, the wait.
const DEADLINE: Duration = Duration::from_secs(420);

#[test]
fn demo_delivers_every_sample_webhook_with_a_verified_signature() {
    let dir = tempfile::tempdir().unwrap();
    let (stdout_path, stderr_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = Command::new("bash")
        .arg(kafka::repo_root().join("scripts/demo.sh"))
        .env("KAFKA_BOOTSTRAP_SERVERS", kafka::bootstrap())
        .env(
            "CONSENT_WEBHOOKS_BIN",
            env!("CARGO_BIN_EXE_consent-webhooks"),
        )
        .stdin(Stdio::null())
        .stdout(File::create(&stdout_path).unwrap())
        .stderr(File::create(&stderr_path).unwrap())
        .spawn()
        .expect("run scripts/demo.sh");

    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > DEADLINE {
            // SIGTERM lets the script stop its service and receiver and delete its topics.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let stdout = std::fs::read_to_string(&stdout_path).unwrap();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    let context = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    let status =
        status.unwrap_or_else(|| panic!("demo still running after {DEADLINE:?}\n{context}"));
    assert!(status.success(), "demo failed ({status})\n{context}");

    let summary = format!(
        "==> {EXPECTED} of {EXPECTED} webhooks delivered, {EXPECTED} verified, 0 failed, 0 unchecked"
    );
    assert!(stdout.contains(&summary), "no line {summary:?}\n{context}");
    let lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("webhook received: "))
        .collect();
    assert!(lines.len() >= EXPECTED, "{context}");
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("webhook received: verified ")),
        "every webhook verified\n{context}"
    );
}
