//! `consent-webhooks run` as a real child process, with a generated config, logs captured, and
//! waits on what it logs.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::kafka;

/// Topics of one test.
#[derive(Debug, Clone)]
pub struct Topics {
    pub input: String,
    pub dead_letter: String,
    pub rejected: String,
    pub retry: String,
    pub group: String,
}

impl Topics {
    /// Fresh names, created on the broker (`partitions` for the input).
    pub async fn create(partitions: i32) -> Topics {
        let topics = Topics {
            input: kafka::unique_name("changes"),
            dead_letter: kafka::unique_name("dead-letter"),
            rejected: kafka::unique_name("rejected"),
            retry: kafka::unique_name("retry"),
            group: kafka::unique_name("group"),
        };
        kafka::create_topic(&topics.input, partitions).await;
        kafka::create_topic(&topics.retry, partitions).await;
        kafka::create_topic(&topics.dead_letter, 1).await;
        kafka::create_topic(&topics.rejected, 1).await;
        topics
    }

    /// The `[kafka]` and `[delivery]` sections; `delivery` adds/overrides delivery keys.
    pub fn config(&self, delivery: &str) -> String {
        format!(
            "[kafka]\nbrokers = \"{}\"\ngroup_id = \"{}\"\ninput_topic = \"{}\"\ndead_letter_topic = \"{}\"\nrejected_topic = \"{}\"\nretry_topic = \"{}\"\n\n[server]\nlisten = \"127.0.0.1:0\"\n\n[delivery]\n{delivery}\n",
            kafka::bootstrap(), self.group, self.input, self.dead_letter, self.rejected, self.retry
        )
    }

    /// Like [`Topics::config`], with `kafka` added to the `[kafka]` section (e.g.
    /// `properties = { "session.timeout.ms" = "6000" }`).
    pub fn config_with(&self, kafka: &str, delivery: &str) -> String {
        self.config(delivery)
            .replacen("\n\n[server]", &format!("\n{kafka}\n\n[server]"), 1)
    }
}

/// The text of the service's `/metrics` on `listen`.
pub async fn metrics_text(listen: std::net::SocketAddr) -> String {
    reqwest::get(format!("http://{listen}/metrics"))
        .await
        .expect("/metrics")
        .text()
        .await
        .expect("/metrics body")
}

/// 127.0.0.1 with a port that was free a moment ago (see [`free_port`]).
pub fn local_address() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A fresh registry topic (created on the broker) and its sections (see
/// [`registry_sections`]), with `secret_refresh` when given.
pub async fn fresh_registry(
    admin: Option<std::net::SocketAddr>,
    secret_refresh: Option<&str>,
) -> (String, String) {
    let topic = kafka::unique_name("organizations");
    kafka::create_registry_topic(&topic).await;
    let mut sections = registry_sections(&topic, admin);
    if let Some(every) = secret_refresh {
        sections = sections.replacen(
            "enabled = true\n",
            &format!("enabled = true\nsecret_refresh = \"{every}\"\n"),
            1,
        );
    }
    (topic, sections)
}

/// The `[registry]` section following `topic`, and, when `admin` is set, an `[admin]` section
/// listening there with its token from the environment variable `ADMIN_TOKEN`.
pub fn registry_sections(topic: &str, admin: Option<std::net::SocketAddr>) -> String {
    let mut out = format!("\n[registry]\nenabled = true\ntopic = \"{topic}\"\n");
    if let Some(listen) = admin {
        out.push_str(&format!(
            "\n[admin]\nlisten = \"{listen}\"\ntoken = {{ env = \"ADMIN_TOKEN\" }}\n"
        ));
    }
    out
}

/// A `[organizations.ID]` section for a local test receiver.
pub fn organization(id: &str, url: &str, extra: &str) -> String {
    format!("\n[organizations.{id}]\nurl = \"{url}\"\nallow_http = true\nallow_private_addresses = true\n{extra}\n")
}

pub struct Service {
    child: Child,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Service {
    /// Starts the service with `config`, and waits until it has partitions assigned.
    pub fn start(config: &str, env: &[(&str, &str)]) -> Service {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(config.as_bytes())
            .unwrap();
        let log = dir.path().join("service.log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_consent-webhooks"));
        command
            .args(["--log-format", "json", "run", "--config"])
            .arg(&path)
            .env("RUST_LOG", "info,consent_webhooks=debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let child = command.spawn().expect("start consent-webhooks");
        let mut service = Service {
            child,
            log,
            _dir: dir,
        };
        // Generous: a first join on a freshly started broker, on a loaded 2-core CI machine, is
        // slow. A service that exits instead fails the test at once, with its log.
        let end = Instant::now() + Duration::from_secs(120);
        loop {
            let logs = service.logs();
            if logs.contains("partitions assigned") {
                return service;
            }
            if let Some(status) = service.child.try_wait().unwrap() {
                panic!("the service exited ({status}) before it had partitions:\n{logs}");
            }
            assert!(
                Instant::now() < end,
                "no partitions assigned within 120 s:\n{logs}"
            );
            // Polls a file the child writes: there is nothing to wait on but the file itself.
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the service with `ADMIN_TOKEN` (and `env`) set, and waits until it has read the
    /// organization registry to its end.
    pub fn start_with_registry(config: &str, env: &[(&str, &str)]) -> Service {
        let mut all = vec![("ADMIN_TOKEN", super::admin::TOKEN)];
        all.extend_from_slice(env);
        let service = Service::start(config, &all);
        service.wait_log(
            "organization registry read to its end",
            Duration::from_secs(30),
        );
        service
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The JSON log lines (`--log-format json`), parsed; lines that are not JSON are skipped.
    pub fn json_logs(&self) -> Vec<serde_json::Value> {
        self.logs()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Log lines whose message is exactly `message`.
    pub fn log_messages(&self, message: &str) -> Vec<serde_json::Value> {
        self.json_logs()
            .into_iter()
            .filter(|line| line["fields"]["message"] == message)
            .collect()
    }

    /// Waits until the log contains `needle`; panics with the log at the deadline.
    pub fn wait_log(&self, needle: &str, deadline: Duration) {
        let end = Instant::now() + deadline;
        loop {
            let logs = self.logs();
            if logs.contains(needle) {
                return;
            }
            assert!(
                Instant::now() < end,
                "no {needle:?} in the service log within {deadline:?}:\n{logs}"
            );
            // Polls a file the child writes: there is nothing to wait on but the file itself.
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args(["-s", signal, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, up to `deadline`.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + deadline;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        // A failing test leaves the service's log behind, for the post-mortem.
        if std::thread::panicking() {
            let keep = std::env::temp_dir().join(format!("consent-webhooks-{}.log", self.pid()));
            if std::fs::copy(&self.log, &keep).is_ok() {
                eprintln!("service log kept at {}", keep.display());
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bound, then released), for a process
/// that needs its address fixed before it starts (the service's `[server] listen`, Prometheus).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

impl Topics {
    /// Like [`Topics::config`], with `[server] listen` (`/metrics`, `/healthz`, `/readyz`) on
    /// `listen` instead of an ephemeral port.
    pub fn config_listening(&self, listen: std::net::SocketAddr, delivery: &str) -> String {
        self.config(delivery).replacen(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"{listen}\""),
            1,
        )
    }
}
