//! Helpers of tests/deploy_artifacts.rs: the tools of `scripts/install-tools.sh`, YAML read
//! through the tools' Python (PyYAML), rendered kustomize overlays, and `check-config` runs.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const INSTALL: &str = "scripts/install-tools.sh";

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn repo_file(path: &str) -> PathBuf {
    repo().join(path.trim_start_matches("./"))
}

/// A tool installed by `scripts/install-tools.sh`; fails the test, naming the script, when it
/// is missing.
pub fn tool(name: &str) -> PathBuf {
    let candidates = [
        repo().join(".tools/venv/bin").join(name),
        repo().join(".tools/bin").join(name),
    ];
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "{name} is not installed (looked in {}): run {INSTALL} first (.ci/run does)",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

fn describe(what: &str, output: &Output) -> String {
    format!(
        "{what}: {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs `program args` in `dir` (default: the repository); fails the test unless it succeeds.
pub fn run(program: &Path, args: &[&str], dir: Option<&Path>, source: &str) -> Output {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir.map_or_else(repo, Path::to_path_buf))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} ({source}): {e}", program.display()));
    assert!(
        output.status.success(),
        "{}",
        describe(
            &format!("{} {}", program.display(), args.join(" ")),
            &output
        )
    );
    output
}

/// Runs a tool with `stdin`; fails the test unless it succeeds.
pub fn run_tool(program: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .current_dir(repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default()).unwrap();
    drop(input);
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        describe(
            &format!("{} {}", program.display(), args.join(" ")),
            &output
        )
    );
    output
}

/// Every document of a YAML stream, as JSON (PyYAML's safe loader; empty documents dropped).
pub fn yaml_documents(text: &str) -> Vec<Value> {
    let script = "import json, sys, yaml\n\
                  docs = [d for d in yaml.safe_load_all(sys.stdin) if d is not None]\n\
                  json.dump(docs, sys.stdout)";
    let output = run_tool(&tool("python"), &["-c", script], Some(text.as_bytes()));
    serde_json::from_slice(&output.stdout).expect("JSON from the YAML loader")
}

/// The single document of a YAML file of the repository.
pub fn yaml_file(path: &str) -> Value {
    let text = std::fs::read_to_string(repo_file(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut docs = yaml_documents(&text);
    assert_eq!(docs.len(), 1, "{path}: one YAML document");
    docs.remove(0)
}

/// The instructions of a Dockerfile, continuation lines joined, comments dropped:
/// `(INSTRUCTION, arguments)`.
pub fn dockerfile_instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (op, args) = current
            .split_once(char::is_whitespace)
            .unwrap_or((&current, ""));
        out.push((op.to_uppercase(), args.trim().to_owned()));
        current.clear();
    }
    out
}

/// GitHub's heading anchors of a Markdown text.
pub fn markdown_anchors(markdown: &str) -> BTreeSet<String> {
    markdown
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| {
            l.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                    _ => None,
                })
                .collect()
        })
        .collect()
}

/// Every `{ file = "..." }` secret reference of a configuration.
pub fn secret_file_references(config: &toml::Value) -> BTreeSet<String> {
    fn walk(value: &toml::Value, out: &mut BTreeSet<String>) {
        match value {
            toml::Value::Table(table) => {
                if table.len() == 1 {
                    if let Some(toml::Value::String(file)) = table.get("file") {
                        out.insert(file.clone());
                        return;
                    }
                }
                table.values().for_each(|v| walk(v, out));
            }
            toml::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    walk(config, &mut out);
    out
}

/// The ports of `kafka.brokers`.
pub fn broker_ports(config: &toml::Value) -> BTreeSet<u64> {
    config["kafka"]["brokers"]
        .as_str()
        .unwrap()
        .split(',')
        .map(|b| b.trim().rsplit(':').next().unwrap().parse().unwrap())
        .collect()
}

/// `delivery.drain_timeout` in whole seconds (default 15 s).
pub fn drain_timeout_secs(config: &toml::Value) -> u64 {
    let text = config
        .get("delivery")
        .and_then(|d| d.get("drain_timeout"))
        .and_then(|v| v.as_str())
        .unwrap_or("15s");
    humantime::parse_duration(text)
        .unwrap_or_else(|e| panic!("drain_timeout {text}: {e}"))
        .as_secs()
}

/// Runs `consent-webhooks check-config` on `config`, each secret file path of `secret_files`
/// replaced by the local file standing in for it.
pub fn check_config_with_secret_files(
    config: &str,
    secret_files: &BTreeMap<String, PathBuf>,
    what: &str,
) {
    let mut text = config.to_owned();
    for (path, file) in secret_files {
        text = text.replace(
            &format!("\"{path}\""),
            &format!("{:?}", file.display().to_string()),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_consent-webhooks"))
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        describe(
            &format!("check-config of the {what} configuration"),
            &output
        )
    );
}

/// A kustomize overlay of deploy/kubernetes/, rendered.
pub struct Rendered {
    pub overlay: String,
    pub yaml: String,
    pub objects: Vec<Value>,
}

/// API groups whose objects the Kubernetes schemas cover; the rest are CRDs.
fn is_builtin(api_version: &str) -> bool {
    match api_version.split_once('/') {
        None => true,
        Some((group, _)) => !group.contains('.') || group.ends_with(".k8s.io"),
    }
}

impl Rendered {
    pub fn overlay(overlay: &str) -> Rendered {
        let dir = format!("deploy/kubernetes/overlays/{overlay}");
        let output = run_tool(&tool("kustomize"), &["build", &dir], None);
        let yaml = String::from_utf8(output.stdout).unwrap();
        let objects = yaml_documents(&yaml);
        assert!(!objects.is_empty(), "{overlay}: nothing rendered");
        Rendered {
            overlay: overlay.to_owned(),
            yaml,
            objects,
        }
    }

    /// The one object of `kind`.
    pub fn one(&self, kind: &str) -> &Value {
        let found: Vec<&Value> = self.objects.iter().filter(|o| o["kind"] == kind).collect();
        assert_eq!(found.len(), 1, "{}: one {kind}", self.overlay);
        found[0]
    }

    /// Every object validated: Kubernetes kinds by kubernetes-validate (strict: unknown fields
    /// are errors), KEDA and Prometheus-operator kinds by crdcheck. An object neither covers
    /// fails the test.
    pub fn validate(&self) {
        let (builtin, custom): (Vec<&Value>, Vec<&Value>) = self
            .objects
            .iter()
            .partition(|o| is_builtin(o["apiVersion"].as_str().unwrap()));
        let stream = |objects: &[&Value]| -> String {
            objects
                .iter()
                .map(|o| format!("---\n{o}\n"))
                .collect::<String>()
        };

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(format!("{}.yaml", self.overlay));
        std::fs::write(&file, stream(&builtin)).unwrap();
        let output = run_tool(
            &tool("kubernetes-validate"),
            &["--strict", file.to_str().unwrap()],
            None,
        );
        let report = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        assert!(
            !report.contains("WARN") && !report.contains("ERROR"),
            "{}: kubernetes-validate:\n{report}",
            self.overlay
        );
        assert_eq!(
            report.matches(" passed for resource ").count(),
            builtin.len(),
            "{}: every Kubernetes object validated:\n{report}",
            self.overlay
        );

        let output = run_tool(&tool("crdcheck"), &[], Some(stream(&custom).as_bytes()));
        let report = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            report.lines().filter(|l| l.starts_with("ok ")).count(),
            custom.len(),
            "{}: every KEDA and Prometheus-operator object validated:\n{report}",
            self.overlay
        );
    }
}
