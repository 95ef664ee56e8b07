//! The observability artefacts under `deploy/`: Prometheus alerting rules and their unit tests,
//! the Prometheus configuration, and the Grafana dashboard, checked with Prometheus's own tools
//! (`promtool`, `prometheus`) offline and against a running service.
//!
//! `promtool` and `prometheus` are required: these tests fail (never skip) without them.
//! Install: `apt-get update && apt-get install -y prometheus`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use consent_webhooks::telemetry::Metrics;
use serde_json::Value;
use support::kafka;
use support::receiver::{Receiver, Reply};
use support::records;
use support::service::{free_port, organization, Service, Topics};

const DASHBOARD: &str = "deploy/grafana/consent-webhooks.json";
const ALERTS: &str = "deploy/prometheus/alerts.yml";
const ALERT_TESTS: &str = "deploy/prometheus/alerts.test.yml";
const PROMETHEUS_CONFIG: &str = "deploy/prometheus/prometheus.yml";

/// Every alert `alerts.yml` must define.
const ALERT_NAMES: [&str; 9] = [
    "ConsentWebhooksDeadLetters",
    "ConsentWebhooksLagGrowing",
    "ConsentWebhooksConsumptionStopped",
    "ConsentWebhooksEndpointFailing",
    "ConsentWebhooksOAuthFailures",
    "ConsentWebhooksNoReadyReplica",
    "ConsentWebhooksOutputWriteFailures",
    "ConsentWebhooksParkedBacklogAging",
    "ConsentWebhooksRegistryStale",
];

// ------------------------------------------------------------------------------------------
// Tools and files

/// The path of a Prometheus tool on `PATH`; panics with how to install it when missing.
fn tool(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|path| path.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is required by the observability tests and was not found on PATH. \
                 Install it with `apt-get update && apt-get install -y prometheus` \
                 (provides /usr/bin/promtool and /usr/bin/prometheus)."
            )
        })
}

fn repo_file(path: &str) -> PathBuf {
    kafka::repo_root().join(path)
}

fn read(path: &str) -> String {
    let full = repo_file(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("cannot read {}: {e}", full.display()))
}

fn describe(output: &Output) -> String {
    format!(
        "exit {}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs `promtool args…` in `dir`, `stdin` piped in when given; panics with its output unless
/// it exits 0.
fn promtool(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(tool("promtool"))
        .args(args)
        .current_dir(dir)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input)
            .expect("write to promtool");
    }
    let output = child.wait_with_output().expect("run promtool");
    assert!(
        output.status.success(),
        "promtool {} failed: {}",
        args.join(" "),
        describe(&output)
    );
    output
}

// ------------------------------------------------------------------------------------------
// The dashboard's expressions

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD))
        .unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"))
}

/// One PromQL expression of the dashboard, and where it comes from.
#[derive(Debug, Clone)]
struct Expression {
    origin: String,
    expr: String,
}

/// Panels, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(panels: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in panels.as_array().into_iter().flatten() {
            out.push(panel);
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// Every `expr` of every panel target, and the series selector of every `label_values(…)`
/// template variable query.
fn dashboard_expressions(dashboard: &Value) -> Vec<Expression> {
    let mut out = Vec::new();
    for panel in panels(dashboard) {
        let title = panel["title"].as_str().unwrap_or("?");
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                out.push(Expression {
                    origin: format!("panel {title:?} target {}", target["refId"]),
                    expr: expr.to_owned(),
                });
            }
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if variable["type"] != "query" {
            continue;
        }
        let name = variable["name"].as_str().unwrap_or("?");
        let query = variable["query"]["query"]
            .as_str()
            .or(variable["query"].as_str())
            .unwrap_or_else(|| panic!("variable {name} has no query"));
        let selector = query
            .strip_prefix("label_values(")
            .and_then(|rest| rest.strip_suffix(')'))
            .and_then(|args| args.rsplit_once(','))
            .map(|(selector, _label)| selector.trim())
            .unwrap_or_else(|| {
                panic!("variable {name}: expected label_values(<selector>, <label>), got {query:?}")
            });
        out.push(Expression {
            origin: format!("variable {name}"),
            expr: selector.to_owned(),
        });
    }
    out
}

/// Grafana's variables replaced with what Prometheus accepts: time ranges by windows that hold
/// at least four scrapes of the tests' 1 s interval (Prometheus's own at 15 s too), every other
/// variable (`$job`, `${instance}`, …, always inside a `=~` matcher) by `.*`.
fn substitute(expr: &str) -> String {
    let mut s = expr.to_owned();
    for (var, value) in [
        ("__rate_interval", "1m"),
        ("__interval", "1m"),
        ("__range", "5m"),
    ] {
        s = s
            .replace(&format!("${{{var}}}"), value)
            .replace(&format!("${var}"), value);
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'{') {
            for c in chars.by_ref() {
                if c == '}' {
                    break;
                }
            }
        } else {
            while chars
                .peek()
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
            {
                chars.next();
            }
        }
        out.push_str(".*");
    }
    out
}

/// `consent_webhooks_…` names mentioned in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("consent_webhooks_") {
        let preceded = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if !preceded {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// The metric families of the service (`# TYPE` lines) → their kind.
fn families(exposition: &str) -> BTreeMap<String, String> {
    exposition
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| {
            let mut parts = rest.split_whitespace();
            Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
        })
        .collect()
}

/// Sample names a family exposes (`_bucket`, `_sum`, `_count` for histograms).
fn sample_names(families: &BTreeMap<String, String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (name, kind) in families {
        out.insert(name.clone());
        if kind == "histogram" || kind == "summary" {
            for suffix in ["_bucket", "_sum", "_count"] {
                out.insert(format!("{name}{suffix}"));
            }
        }
    }
    out
}

/// The exposition of a fresh registry, every labelled family given one series (the per-partition
/// gauges, the retry topic's included, have none until librdkafka statistics arrive).
fn offline_exposition() -> String {
    let metrics = Metrics::new(["acme"]);
    metrics.records_consumed.inc();
    metrics.committed_offset.with_label_values(&["0"]).set(0);
    metrics.high_watermark.with_label_values(&["0"]).set(0);
    metrics.consumer_lag.with_label_values(&["0"]).set(0);
    metrics.retry_lag.with_label_values(&["0"]).set(0);
    metrics.end_to_end_latency.observe(0.1);
    metrics.render()
}

/// Asserts every metric name in `text` (from `what`) is one the service exposes.
fn assert_names_exist(what: &str, text: &str, exposed: &BTreeSet<String>) {
    let unknown: Vec<String> = metric_names(text)
        .into_iter()
        .filter(|name| !exposed.contains(name))
        .collect();
    assert!(
        unknown.is_empty(),
        "{what} refers to metrics the service does not expose: {unknown:?}\nexposed: {exposed:?}"
    );
}

// ------------------------------------------------------------------------------------------
// Offline: promtool over the files, the dashboard's structure and PromQL

#[test]
fn alert_rules_pass_promtool_check() {
    let output = promtool(
        &repo_file("deploy/prometheus"),
        &["check", "rules", "alerts.yml"],
        None,
    );
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains(&format!("SUCCESS: {} rules found", ALERT_NAMES.len())),
        "{text}"
    );
    let rules = read(ALERTS);
    assert!(
        rules.contains("- name: consent-webhooks"),
        "group consent-webhooks"
    );
    for name in ALERT_NAMES {
        let at = rules
            .find(&format!("- alert: {name}\n"))
            .unwrap_or_else(|| panic!("{ALERTS} has no alert {name}"));
        let body = &rules[at..];
        let body = &body[..body[1..]
            .find("- alert: ")
            .map_or(body.len(), |end| end + 1)];
        for key in ["severity:", "summary:", "description:", "runbook:"] {
            assert!(body.contains(key), "alert {name} has no {key}");
        }
    }
    assert_names_exist(
        ALERTS,
        &rules,
        &sample_names(&families(&offline_exposition())),
    );
}

#[test]
fn alert_rule_unit_tests_pass() {
    let output = promtool(
        &repo_file("deploy/prometheus"),
        &["test", "rules", "alerts.test.yml"],
        None,
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("SUCCESS"));
    // A firing and a quiet case for every alert.
    let tests = read(ALERT_TESTS);
    for name in ALERT_NAMES {
        let cases: Vec<&str> = tests
            .split("- eval_time:")
            .skip(1)
            .filter(|case| case.contains(&format!("alertname: {name}\n")))
            .collect();
        assert!(
            cases.iter().any(|c| c.contains("exp_alerts: []")),
            "{ALERT_TESTS}: no case where {name} does not fire"
        );
        assert!(
            cases.iter().any(|c| c.contains("exp_labels:")),
            "{ALERT_TESTS}: no case where {name} fires"
        );
    }
}

#[test]
fn prometheus_config_passes_promtool_check() {
    let output = promtool(
        &repo_file("deploy/prometheus"),
        &["check", "config", "prometheus.yml"],
        None,
    );
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("1 rule files found"),
        "{PROMETHEUS_CONFIG}: {text}"
    );
}

#[test]
fn rendered_metrics_pass_promtool_check_metrics() {
    promtool(
        &repo_file("."),
        &["check", "metrics"],
        Some(offline_exposition().as_bytes()),
    );
}

#[test]
fn dashboard_parses_and_every_expression_is_valid_promql() {
    let dashboard = dashboard();
    assert!(
        dashboard["schemaVersion"].as_i64().is_some_and(|v| v >= 36),
        "schemaVersion ≥ 36: {}",
        dashboard["schemaVersion"]
    );
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list");
    assert!(
        variables.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "a `datasource` template variable of type prometheus"
    );
    for panel in panels(&dashboard) {
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().unwrap_or("?");
        let targets = panel["targets"].as_array().map_or(&[][..], Vec::as_slice);
        assert!(!targets.is_empty(), "panel {title:?} has no targets");
        for ds in
            std::iter::once(&panel["datasource"]).chain(targets.iter().map(|t| &t["datasource"]))
        {
            assert_eq!(
                ds["uid"], "${datasource}",
                "panel {title:?}: datasource {ds}"
            );
            assert_eq!(ds["type"], "prometheus", "panel {title:?}: datasource {ds}");
        }
        for target in targets {
            assert!(
                target["expr"]
                    .as_str()
                    .is_some_and(|e| !e.trim().is_empty()),
                "panel {title:?}: a target without expr: {target}"
            );
        }
    }

    let expressions = dashboard_expressions(&dashboard);
    assert!(expressions.len() >= 20, "{} expressions", expressions.len());

    // PromQL validity: promtool parses every expression as a recording rule.
    let dir = tempfile::tempdir().unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in expressions.iter().enumerate() {
        // A JSON string is a valid YAML double-quoted scalar.
        rules += &format!(
            "      - record: dashboard:expr_{i}\n        expr: {}\n",
            serde_json::to_string(&substitute(&e.expr)).unwrap()
        );
    }
    std::fs::write(dir.path().join("dashboard.rules.yml"), &rules).unwrap();
    let check = Command::new(tool("promtool"))
        .args(["check", "rules", "dashboard.rules.yml"])
        .current_dir(dir.path())
        .output()
        .expect("run promtool");
    assert!(
        check.status.success(),
        "dashboard expressions are not valid PromQL: {}\n--- expressions (dashboard:expr_N in order)\n{}",
        describe(&check),
        expressions
            .iter()
            .enumerate()
            .map(|(i, e)| format!("{i}: {}: {}", e.origin, e.expr))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Names: every one is a metric of the service, and every metric of the service has a panel.
    let families = families(&offline_exposition());
    let all: String = expressions
        .iter()
        .map(|e| format!("{}\n", e.expr))
        .collect();
    assert_names_exist(DASHBOARD, &all, &sample_names(&families));
    let used = metric_names(&all);
    let unused: Vec<&String> = families
        .iter()
        .filter(|(name, kind)| {
            let mut samples = vec![name.to_string()];
            if kind.as_str() == "histogram" {
                samples.extend(["_bucket", "_sum", "_count"].map(|s| format!("{name}{s}")));
            }
            samples.iter().all(|sample| !used.contains(sample))
        })
        .map(|(name, _)| name)
        .collect();
    assert!(
        unused.is_empty(),
        "metrics without a dashboard panel: {unused:?}"
    );
    for quantile in [
        "histogram_quantile(0.5, sum by (le) (rate(consent_webhooks_delivery_attempt_duration_seconds_bucket",
        "histogram_quantile(0.99, sum by (le) (rate(consent_webhooks_delivery_attempt_duration_seconds_bucket",
        "histogram_quantile(0.5, sum by (le) (rate(consent_webhooks_delivery_latency_seconds_bucket",
        "histogram_quantile(0.99, sum by (le) (rate(consent_webhooks_delivery_latency_seconds_bucket",
    ] {
        assert!(all.contains(quantile), "no panel computes {quantile}…");
    }
}

#[test]
fn substitution_leaves_plain_promql() {
    assert_eq!(
        substitute(
            r#"sum(rate(x{job=~"$job",instance=~"${instance}"}[$__rate_interval])) + increase(y[${__range}])"#
        ),
        r#"sum(rate(x{job=~".*",instance=~".*"}[1m])) + increase(y[5m])"#
    );
}

// ------------------------------------------------------------------------------------------
// Live: a running service, its /metrics, and a real Prometheus scraping it

const ACME_EVENTS: usize = 12;
const GLOBEX_EVENTS: usize = 3;

/// A running service whose `/metrics` is on `metrics`, with two organizations: `acme` (its
/// endpoint answers 200, after one 503: that event is parked on the retry topic, read back and
/// delivered) and `globex` (400: dead-lettered, `permanent_status`).
struct Pipeline {
    metrics: SocketAddr,
    input: String,
    service: Service,
    acme: Receiver,
    globex: Receiver,
}

impl Pipeline {
    /// Starts the service, with its partitions assigned; nothing produced yet.
    async fn start() -> Pipeline {
        let topics = Topics::create(2).await;
        let acme = Receiver::start(200).await;
        let globex = Receiver::start(400).await;
        let metrics: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let config = topics.config_listening(metrics, "")
            + &organization("acme", &acme.url, "")
            + &organization("globex", &globex.url, "");
        let service = Service::start(&config, &[]);
        Pipeline {
            metrics,
            input: topics.input,
            service,
            acme,
            globex,
        }
    }

    /// Produces `ACME_EVENTS` + `GLOBEX_EVENTS` changes and one broken record, and waits until
    /// acme got its events (one of them after a retry from the retry topic), globex's are
    /// dead-lettered and the broken record rejected.
    async fn deliver(&self) {
        self.acme.script([Reply::status(503)]);
        let mut input = records::users_created("acme", ACME_EVENTS);
        input.extend(records::users_created("globex", GLOBEX_EVENTS));
        input.push(("acme/broken".to_owned(), b"{not json".to_vec()));
        kafka::produce(&self.input, &input).await;

        self.acme
            .wait_until(Duration::from_secs(60), "acme's events", |got| {
                got.iter().filter(|r| r.status == 200).count() >= ACME_EVENTS
            })
            .await;
        self.globex
            .wait_until(Duration::from_secs(60), "globex's events", |got| {
                got.len() >= GLOBEX_EVENTS
            })
            .await;
        // Dead letters are counted once the broker acknowledged them: wait for the counters.
        let dead_letters = r#"consent_webhooks_dead_letters_total{organization="globex",reason="permanent_status"}"#;
        let rejected = r#"consent_webhooks_records_rejected_total{reason="invalid_json"}"#;
        let parked = r#"consent_webhooks_parks_total{organization="acme",reason="retry"}"#;
        let unparked = r#"consent_webhooks_unparks_total{organization="acme"}"#;
        self.wait_metrics(
            "globex's dead letters, the rejected record and acme's parked retry",
            |text| {
                sample(text, dead_letters) == Some(GLOBEX_EVENTS as f64)
                    && sample(text, rejected) == Some(1.0)
                    && sample(text, parked) == Some(1.0)
                    && sample(text, unparked) == Some(1.0)
            },
        )
        .await;
    }

    async fn scrape(&self) -> Result<String, String> {
        let response = http()
            .get(format!("http://{}/metrics", self.metrics))
            .send()
            .await
            .map_err(|e| format!("GET /metrics: {e}"))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| e.to_string())?;
        if status.is_success() {
            Ok(text)
        } else {
            Err(format!("GET /metrics: {status}: {text}"))
        }
    }

    /// Scrapes until `done` holds; panics at the deadline with the last answer and the log.
    async fn wait_metrics(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let last = self.scrape().await;
            if let Ok(text) = &last {
                if done(text) {
                    return text.clone();
                }
            }
            assert!(
                Instant::now() < end,
                "/metrics on {} did not show {what} within 60 s (is the endpoint served on \
                 `[server] listen`?); last answer: {last:?}\n--- service log\n{}",
                self.metrics,
                self.service.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .unwrap()
}

/// The value of the sample `series` (name and labels exactly as exposed) in `exposition`.
fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_metrics_pass_promtool_check_metrics() {
    tool("promtool");
    let pipeline = Pipeline::start().await;
    pipeline.deliver().await;
    let text = pipeline
        .wait_metrics(
            "the per-partition lag of the input and retry topics (librdkafka statistics)",
            |text| {
                text.contains("consent_webhooks_consumer_lag{")
                    && text.contains("consent_webhooks_retry_lag{")
            },
        )
        .await;
    promtool(
        &repo_file("."),
        &["check", "metrics"],
        Some(text.as_bytes()),
    );

    let exposed = sample_names(&families(&text));
    assert_names_exist(DASHBOARD, &read(DASHBOARD), &exposed);
    assert_names_exist(ALERTS, &read(ALERTS), &exposed);
    assert_eq!(
        sample(
            &text,
            r#"consent_webhooks_deliveries_total{organization="acme",outcome="delivered"}"#
        ),
        Some(ACME_EVENTS as f64),
        "{text}"
    );
    assert!(
        sample(&text, "consent_webhooks_records_consumed_total")
            .is_some_and(|n| n >= (ACME_EVENTS + GLOBEX_EVENTS + 1) as f64),
        "{text}"
    );
}

/// A `prometheus` server on a free port, stopped (and its storage removed) on drop.
struct Prometheus {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrapes `target` every second and evaluates `alerts.yml` every second.
    async fn start(target: SocketAddr) -> Prometheus {
        let binary = tool("prometheus");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {}\n\
                 scrape_configs:\n  - job_name: consent-webhooks\n    static_configs:\n      - targets: [\"{target}\"]\n",
                serde_json::to_string(&repo_file(ALERTS)).unwrap()
            ),
        )
        .unwrap();
        let port = free_port();
        let log = dir.path().join("prometheus.log");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start prometheus");
        let prometheus = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
        };
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = http()
                .get(format!("{}/-/ready", prometheus.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return prometheus;
            }
            assert!(
                Instant::now() < end,
                "prometheus not ready within 60 s\n--- its log\n{}",
                prometheus.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let response = http()
            .get(format!("{}{path}", self.url))
            .query(query)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let text = response.text().await.unwrap();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {text}"))
    }

    /// `/api/v1/query` of `expr`: its result vector; panics unless the status is success.
    async fn query(&self, origin: &str, expr: &str) -> Vec<Value> {
        let answer = self.api("/api/v1/query", &[("query", expr)]).await;
        assert_eq!(
            answer["status"], "success",
            "{origin}: Prometheus rejected {expr:?}: {answer}"
        );
        match &answer["data"]["result"] {
            Value::Array(result) => result.clone(),
            // A scalar or string: one value.
            other => vec![other.clone()],
        }
    }

    /// Polls `expr` until it returns at least one series, or panics at the deadline.
    async fn wait_for(&self, expr: &str, deadline: Duration) -> Vec<Value> {
        let end = Instant::now() + deadline;
        loop {
            let result = self.query("wait", expr).await;
            if !result.is_empty() {
                return result;
            }
            assert!(
                Instant::now() < end,
                "Prometheus returned nothing for {expr:?} within {deadline:?}\n--- targets\n{}\n--- its log\n{}",
                self.api("/api/v1/targets", &[]).await,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_evaluates_every_dashboard_and_alert_expression_on_live_metrics() {
    tool("promtool");
    tool("prometheus");
    let pipeline = Pipeline::start().await;
    let prometheus = Prometheus::start(pipeline.metrics).await;
    // Scraped before anything happens, as in production: increases start from the zeros the
    // service registers at start.
    prometheus
        .wait_for(
            "consent_webhooks_records_consumed_total",
            Duration::from_secs(60),
        )
        .await;
    pipeline.deliver().await;

    // Scraped, with what the pipeline did.
    prometheus
        .wait_for(
            "consent_webhooks_records_consumed_total > 0",
            Duration::from_secs(60),
        )
        .await;
    for (expr, want) in [
        (
            r#"consent_webhooks_deliveries_total{organization="acme",outcome="delivered"}"#,
            ACME_EVENTS,
        ),
        (
            r#"consent_webhooks_dead_letters_total{organization="globex",reason="permanent_status"}"#,
            GLOBEX_EVENTS,
        ),
        (
            r#"consent_webhooks_records_rejected_total{reason="invalid_json"}"#,
            1,
        ),
        (
            "consent_webhooks_delivery_latency_seconds_count",
            ACME_EVENTS,
        ),
        (
            r#"consent_webhooks_parks_total{organization="acme",reason="retry"}"#,
            1,
        ),
        (r#"consent_webhooks_unparks_total{organization="acme"}"#, 1),
    ] {
        prometheus
            .wait_for(&format!("{expr} == {want}"), Duration::from_secs(30))
            .await;
    }

    // Every dashboard expression: accepted, and (all series the service exposes exist from the
    // start, at zero) returning data once rate() windows hold a few scrapes and the lag gauges
    // have their first librdkafka statistics.
    let expressions = dashboard_expressions(&dashboard());
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let mut empty = Vec::new();
        for e in &expressions {
            let expr = substitute(&e.expr);
            if prometheus.query(&e.origin, &expr).await.is_empty() {
                empty.push(format!("{}: {expr}", e.origin));
            }
        }
        if empty.is_empty() {
            break;
        }
        assert!(
            Instant::now() < end,
            "dashboard expressions without data after 60 s:\n{}\n--- service /metrics\n{}",
            empty.join("\n"),
            pipeline.scrape().await.unwrap_or_else(|e| e)
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // Every alert rule, as Prometheus loaded it: evaluated without error, and its expression
    // accepted by the query API too.
    let rules = prometheus.api("/api/v1/rules", &[]).await;
    let loaded: Vec<Value> = rules["data"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|g| g["name"] == "consent-webhooks")
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .collect();
    let names: BTreeSet<&str> = loaded.iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, BTreeSet::from(ALERT_NAMES), "{rules}");
    for rule in &loaded {
        let name = rule["name"].as_str().unwrap();
        assert_ne!(rule["health"], "err", "alert {name}: {}", rule["lastError"]);
        prometheus
            .query(&format!("alert {name}"), rule["query"].as_str().unwrap())
            .await;
    }

    // What the pipeline did shows in the alerts: globex's dead letters fire at once, its failing
    // endpoint is pending (5 minutes), a ready replica keeps the no-replica alert quiet, and
    // nothing parked (globex's 400 is permanent) keeps the parked-backlog alert quiet.
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let alerts = prometheus.api("/api/v1/alerts", &[]).await;
        let list = alerts["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let has = |name: &str, state: &str| {
            list.iter().any(|a| {
                a["labels"]["alertname"] == name
                    && a["labels"]["organization"] == "globex"
                    && a["state"] == state
            })
        };
        let any = |name: &str| list.iter().any(|a| a["labels"]["alertname"] == name);
        if has("ConsentWebhooksDeadLetters", "firing")
            && has("ConsentWebhooksEndpointFailing", "pending")
            && !any("ConsentWebhooksNoReadyReplica")
            && !any("ConsentWebhooksParkedBacklogAging")
            && !any("ConsentWebhooksRegistryStale")
        {
            break;
        }
        assert!(
            Instant::now() < end,
            "expected ConsentWebhooksDeadLetters firing and ConsentWebhooksEndpointFailing \
             pending for globex, and no ConsentWebhooksNoReadyReplica, \
             ConsentWebhooksParkedBacklogAging or ConsentWebhooksRegistryStale; alerts: {alerts}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
