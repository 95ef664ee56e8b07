//! What the end-to-end benchmarks share: the broker, the topics of a run, the records, the
//! in-process receiver, the service as a child process, and the burst and sustained runs
//! (`benches/pipeline.rs` documents them; `benches/ceilings.rs` puts them beside the ceilings).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use chrono::{DateTime, SecondsFormat, Utc};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

pub const ORGS: usize = 64;
pub const PARTITIONS: i32 = 8;
/// Distinct users (record i has user i % USERS) unless BENCH_USERS says otherwise.
pub const USERS: usize = 20_000;
/// org-03..org-63: the organizations up in a BENCH_OUTAGE=3 run, compared across runs.
pub const COMPARED_FROM: usize = 3;

/// The compressed retry policy of the organizations that are down (BENCH_OUTAGE).
pub const OUTAGE_RETRY: &str = r#"retry = { schedule = ["1s", "2s", "4s", "8s", "15s"], max_jitter = "0s", budget = "20s", allow_below_minimum = true }"#;

pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        Err(_) => default,
    }
}

pub fn bootstrap() -> String {
    if let Ok(b) = std::env::var("KAFKA_BOOTSTRAP_SERVERS") {
        return b;
    }
    let out = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/local/kafka.sh"
        ))
        .arg("start")
        .env("KAFKA_PORT", "39092")
        .env("KAFKA_CONTROLLER_PORT", "39093")
        .output()
        .expect("deploy/local/kafka.sh");
    assert!(
        out.status.success(),
        "Kafka did not start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_owned()
}

/// An admin client on `bootstrap`, for the runs' topics.
pub fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap()
}

/// The topics and group of one run.
pub struct Topics {
    pub input: String,
    pub retry: String,
    pub dead_letter: String,
    pub rejected: String,
    pub group: String,
}

impl Topics {
    pub fn new() -> Topics {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        let suffix = format!("{}-{since_epoch}", std::process::id());
        Topics {
            input: format!("bench-changes-{suffix}"),
            retry: format!("bench-retry-{suffix}"),
            dead_letter: format!("bench-dead-letter-{suffix}"),
            rejected: format!("bench-rejected-{suffix}"),
            group: format!("bench-{suffix}"),
        }
    }

    pub async fn create(&self, admin: &AdminClient<DefaultClientContext>) {
        let topics = [
            NewTopic::new(&self.input, PARTITIONS, TopicReplication::Fixed(1)),
            // The service refuses to start unless the retry topic has the input's partitions.
            NewTopic::new(&self.retry, PARTITIONS, TopicReplication::Fixed(1)),
            NewTopic::new(&self.dead_letter, 1, TopicReplication::Fixed(1)),
            NewTopic::new(&self.rejected, 1, TopicReplication::Fixed(1)),
        ];
        for r in admin
            .create_topics(&topics, &AdminOptions::new())
            .await
            .unwrap()
        {
            if let Err((t, e)) = r {
                panic!("create {t}: {e}");
            }
        }
    }

    pub async fn delete(&self, admin: &AdminClient<DefaultClientContext>) {
        if std::env::var_os("BENCH_KEEP_TOPICS").is_some() {
            return;
        }
        let names = [
            self.input.as_str(),
            &self.retry,
            &self.dead_letter,
            &self.rejected,
        ];
        match admin.delete_topics(&names, &AdminOptions::new()).await {
            Ok(results) => {
                for (t, e) in results.into_iter().filter_map(Result::err) {
                    eprintln!("pipeline: could not delete topic {t}: {e}");
                }
            }
            Err(e) => eprintln!("pipeline: could not delete the topics: {e}"),
        }
    }

    /// The service's config: every organization at `receiver`/org-NN, the first `outage` with
    /// the compressed retry policy.
    pub fn config(
        &self,
        bootstrap: &str,
        listen: &str,
        receiver: SocketAddr,
        outage: usize,
    ) -> String {
        let mut config = format!(
            "[kafka]\nbrokers = \"{bootstrap}\"\ngroup_id = \"{}\"\ninput_topic = \"{}\"\ndead_letter_topic = \"{}\"\nrejected_topic = \"{}\"\nretry_topic = \"{}\"\n[server]\nlisten = \"{listen}\"\n[delivery]\nmax_in_flight_requests = 256\nendpoint_concurrency = 8\n",
            self.group, self.input, self.dead_letter, self.rejected, self.retry
        );
        for o in 0..ORGS {
            config += &format!("[organizations.org-{o:02}]\nurl = \"http://{receiver}/org-{o:02}\"\nallow_http = true\nallow_private_addresses = true\n");
            if o < outage {
                config += OUTAGE_RETRY;
                config += "\n";
            }
        }
        config
    }
}

/// Record `i`: organization i % 64, user i % `users`, key `org/user`, ~1 KB.
pub fn record(i: usize, users: usize, occurred_at: &str) -> (String, String) {
    record_of(&format!("org-{:02}", i % ORGS), i, users, occurred_at)
}

/// Record `i` of organization `org`: user i % `users`, key `org/user`, ~1 KB.
pub fn record_of(org: &str, i: usize, users: usize, occurred_at: &str) -> (String, String) {
    let user = format!("user-{}", i % users);
    let padding = "x".repeat(560);
    let value = format!(
        r#"{{"id":"bench-{i}","organization_id":"{org}","occurred_at":"{occurred_at}","entity_type":"user","action":"created","after":{{"id":"{user}","organization_id":"{org}","organization_user_id":"{user}@example.com","consents":{{"purposes":[{{"id":"analytics","enabled":true}},{{"id":"marketing","enabled":false}}],"vendors":{{"enabled":["google","criteo"],"disabled":[]}}}},"metadata":{{"note":"{padding}"}}}}}}"#
    );
    (format!("{org}/{user}"), value)
}

/// A `Vm*` line of /proc/<pid>/status, in MB.
/// CPU time (user + system) of a process so far, in seconds: `pid` is a number or "self".
pub fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command name (in parentheses): state, ppid, ..., utime (14th field), stime.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / clock_ticks()
}

/// Clock ticks per second of /proc times (`getconf CLK_TCK`, 100 on Linux).
pub fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

pub fn vm_mb(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The service as a child process; on the CPUs of BENCH_SERVICE_CPUS (a `taskset -c` list)
/// when that is set, under the command of BENCH_SERVICE_PREFIX when that is set (a profiler:
/// `BENCH_SERVICE_PREFIX="valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out"`). Logs at
/// `info`, as deployed, unless BENCH_RUST_LOG says otherwise.
pub fn spawn_service(config: &str, dir: &Path) -> Child {
    let config_path = dir.join("bench.toml");
    std::fs::write(&config_path, config).unwrap();
    let mut argv: Vec<String> = Vec::new();
    if let Ok(cpus) = std::env::var("BENCH_SERVICE_CPUS") {
        argv.extend(["taskset".into(), "-c".into(), cpus]);
    }
    if let Ok(prefix) = std::env::var("BENCH_SERVICE_PREFIX") {
        argv.extend(prefix.split_whitespace().map(str::to_owned));
    }
    argv.push(env!("CARGO_BIN_EXE_consent-webhooks").to_owned());
    let mut command = Command::new(&argv[0]);
    command.args(&argv[1..]);
    command
        .args(["run", "--config"])
        .arg(&config_path)
        .env(
            "RUST_LOG",
            std::env::var("BENCH_RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap()
}

/// SIGTERM, then up to 60 s for the drain, then SIGKILL.
pub async fn stop_service(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("pipeline: the service did not stop within 60 s of SIGTERM; killing it");
    let _ = child.kill();
    let _ = child.wait();
}

pub fn assert_running(child: &mut Child) {
    if let Some(status) = child.try_wait().unwrap() {
        panic!("the service exited ({status}) during the benchmark");
    }
}

/// What the receiver saw.
pub struct Receiver {
    /// Organizations 0..outage answer 503.
    pub outage: usize,
    /// Parse `created_at` of every healthy delivery (sustained mode only).
    pub measure_latency: bool,
    /// Time zero of every offset below.
    pub epoch: Instant,
    /// Healthy deliveries.
    pub delivered: AtomicU64,
    /// Requests to the down organizations.
    pub down_requests: AtomicU64,
    pub first: Mutex<Option<Instant>>,
    /// Per healthy delivery: (receive time in ms since `epoch`, latency in µs, organization).
    pub samples: Mutex<Vec<(u32, u32, u8)>>,
    pub unparsable: AtomicU64,
    /// When set, the wrapping sum of a hash of every healthy delivery's organization and body:
    /// one number that two receivers agree on when they got the same bodies, in any order, and
    /// (but for a hash collision) only then. The ceilings benchmark checks with it that (b)
    /// sent what (c) delivered. Hashing costs a receiver a fraction of what keeping the bodies
    /// did: holding hyper's buffers, it cut (c) by 15 %.
    pub digest: Option<AtomicU64>,
}

impl Receiver {
    /// A receiver where organizations 0..`outage` answer 503; `samples` reserves room for that
    /// many latency samples (0: latency not measured); `digest` sums the bodies' hashes.
    pub fn new(outage: usize, samples: usize, digest: bool) -> Arc<Receiver> {
        Arc::new(Receiver {
            outage,
            measure_latency: samples > 0,
            epoch: Instant::now(),
            delivered: AtomicU64::new(0),
            down_requests: AtomicU64::new(0),
            first: Mutex::new(None),
            samples: Mutex::new(Vec::with_capacity(samples)),
            unparsable: AtomicU64::new(0),
            digest: digest.then(|| AtomicU64::new(0)),
        })
    }
}

#[derive(serde::Deserialize)]
struct Body<'a> {
    #[serde(borrow)]
    created_at: std::borrow::Cow<'a, str>,
}

pub async fn receive(
    State(receiver): State<Arc<Receiver>>,
    UrlPath(org): UrlPath<String>,
    body: Bytes,
) -> StatusCode {
    let index: usize = org
        .strip_prefix("org-")
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX);
    if index < receiver.outage {
        receiver.down_requests.fetch_add(1, Ordering::Relaxed);
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    receiver
        .first
        .lock()
        .unwrap()
        .get_or_insert_with(Instant::now);
    if receiver.measure_latency {
        let now = Utc::now();
        let received_ms = receiver.epoch.elapsed().as_millis() as u32;
        let produced = serde_json::from_slice::<Body<'_>>(&body)
            .ok()
            .and_then(|b| DateTime::parse_from_rfc3339(&b.created_at).ok());
        match produced {
            Some(produced) => {
                let latency_us = (now - produced.with_timezone(&Utc))
                    .num_microseconds()
                    .unwrap_or(0)
                    .clamp(0, i64::from(u32::MAX)) as u32;
                receiver
                    .samples
                    .lock()
                    .unwrap()
                    .push((received_ms, latency_us, index as u8));
            }
            None => {
                receiver.unparsable.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    if let Some(digest) = &receiver.digest {
        digest.fetch_add(body_hash(index as u8, &body), Ordering::Relaxed);
    }
    // Release: whoever sees this count sees the digest's additions before it.
    receiver.delivered.fetch_add(1, Ordering::Release);
    StatusCode::NO_CONTENT
}

pub async fn start_receiver(receiver: Arc<Receiver>) -> SocketAddr {
    let app = Router::new()
        .route("/{org}", post(receive))
        .with_state(receiver);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// All records up front, then the service: deliveries/s from the first to the last delivery.
pub async fn run_burst(bootstrap: &str, topics: &Topics, n: usize) -> serde_json::Value {
    let produced = produce_burst(bootstrap, topics, n).await;
    deliver_burst(bootstrap, topics, produced, false).await.0
}

/// One delivery's share of [`Receiver::digest`]: a hash of its organization and body.
pub fn body_hash(organization: u8, body: &[u8]) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    // `new` has fixed keys: the same value in every receiver.
    let mut hasher = DefaultHasher::new();
    (organization, body).hash(&mut hasher);
    hasher.finish()
}

/// Record `i` of those [`produce_burst`] writes: `(key, value)`.
pub fn burst_record(i: usize) -> (String, String) {
    record(i, USERS, "2026-11-27T09:00:00Z")
}

/// What [`produce_burst`] wrote, for [`deliver_burst`].
pub struct Produced {
    n: usize,
    record_bytes: usize,
    seconds: f64,
}

/// Writes `n` records to the input topic, all acknowledged.
pub async fn produce_burst(bootstrap: &str, topics: &Topics, n: usize) -> Produced {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .create()
        .unwrap();
    let start = Instant::now();
    let mut sends = Vec::with_capacity(10_000);
    for i in 0..n {
        let (key, value) = burst_record(i);
        sends.push(
            producer
                .send_result(FutureRecord::to(&topics.input).key(&key).payload(&value))
                .unwrap(),
        );
        if sends.len() == 10_000 {
            for s in sends.drain(..) {
                s.await.unwrap().unwrap();
            }
        }
    }
    for s in sends {
        s.await.unwrap().unwrap();
    }
    let produce_s = start.elapsed().as_secs_f64();
    let record_bytes = burst_record(0).1.len();
    println!("pipeline: produced {n} records (~{record_bytes} bytes each) in {produce_s:.1} s");
    Produced {
        n,
        record_bytes,
        seconds: produce_s,
    }
}

/// Starts the service on the records [`produce_burst`] wrote and waits for every delivery.
pub async fn deliver_burst(
    bootstrap: &str,
    topics: &Topics,
    produced: Produced,
    digest: bool,
) -> (serde_json::Value, Option<u64>) {
    let Produced {
        n,
        record_bytes,
        seconds: produce_s,
    } = produced;
    let receiver = Receiver::new(0, 0, digest);
    let addr = start_receiver(receiver.clone()).await;

    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_service(
        &topics.config(bootstrap, "127.0.0.1:0", addr, 0),
        dir.path(),
    );
    let pid = child.id();

    let deadline = Instant::now() + Duration::from_secs(600);
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    while (receiver.delivered.load(Ordering::Acquire) as usize) < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} delivered in 600 s",
            receiver.delivered.load(Ordering::Relaxed)
        );
        assert_running(&mut child);
        ticker.tick().await;
    }
    let elapsed = receiver.first.lock().unwrap().unwrap().elapsed();
    let rss = vm_mb(pid, "VmHWM");
    // Everything the service spent, start-up included: what one delivery costs, all told.
    let cpu = cpu_seconds(&pid.to_string());
    stop_service(&mut child).await;
    let per_s = n as f64 / elapsed.as_secs_f64();
    println!(
        "pipeline: {n} deliveries to {ORGS} organizations in {:.2} s = {per_s:.0} deliveries/s; service peak RSS {rss:.0} MB, CPU {cpu:.2} s ({:.1} µs per delivery)",
        elapsed.as_secs_f64(),
        cpu / n as f64 * 1e6,
    );
    let digest = receiver.digest.as_ref().map(|d| d.load(Ordering::Relaxed));
    let figures = json!({
            "mode": "burst",
            "records": n,
            "record_bytes": record_bytes,
            "organizations": ORGS,
            "partitions": PARTITIONS,
            "produce_seconds": round(produce_s, 2),
            "delivery_seconds": round(elapsed.as_secs_f64(), 2),
            "deliveries_per_s": per_s.round(),
            "vm_hwm_mb": round(rss, 1),
            "service_cpu_seconds": round(cpu, 2),
            "service_cpu_us_per_delivery": round(cpu / n as f64 * 1e6, 1),
    });
    (figures, digest)
}

pub fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// The sum of the samples of metric `name` whose labels satisfy `labels`.
pub fn metric_sum(text: &str, name: &str, labels: impl Fn(&str) -> bool) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            (metric == name && labels(label_text)).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// The samples of metric `name` whose labels satisfy `labels`, summed by the value of label
/// `by`; zeros left out.
pub fn by_label(
    text: &str,
    name: &str,
    labels: impl Fn(&str) -> bool,
    by: &str,
) -> BTreeMap<String, f64> {
    let mut sums = BTreeMap::<String, f64>::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Some((metric, label_text)) = series.split_once('{') else {
            continue;
        };
        let label_text = label_text.trim_end_matches('}');
        if metric != name || !labels(label_text) {
            continue;
        }
        if let (Some(key), Ok(v)) = (label(label_text, by), value.parse::<f64>()) {
            if v != 0.0 {
                *sums.entry(key.to_owned()).or_default() += v;
            }
        }
    }
    sums
}

/// The value of label `label` in a Prometheus label text (`a="x",b="y"`).
pub fn label<'a>(labels: &'a str, label: &str) -> Option<&'a str> {
    labels.split("\",").find_map(|pair| {
        let (k, v) = pair.split_once("=\"")?;
        (k.trim_start_matches(',') == label).then(|| v.trim_end_matches('"'))
    })
}

pub fn org_index(labels: &str) -> Option<usize> {
    label(labels, "organization")?
        .strip_prefix("org-")?
        .parse()
        .ok()
}

pub async fn scrape(client: &reqwest::Client, listen: &str) -> Option<String> {
    let response = client
        .get(format!("http://{listen}/metrics"))
        .send()
        .await
        .ok()?;
    response.text().await.ok()
}

pub fn percentile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

/// The service first, then a paced producer; healthy deliveries/s, latency, RSS; the down
/// organizations' requests and dead letters.
/// A sustained run's settings (see the module docs for their environment variables).
#[derive(Debug, Clone, Copy)]
pub struct Sustained {
    pub rate: f64,
    pub seconds: f64,
    pub outage: usize,
    pub warmup: f64,
    pub drain: f64,
    pub users: usize,
}

impl Sustained {
    /// From BENCH_RATE, BENCH_SECONDS, BENCH_OUTAGE, BENCH_WARMUP, BENCH_DRAIN, BENCH_USERS.
    pub fn from_env() -> Sustained {
        let seconds: f64 = env_or("BENCH_SECONDS", 60.0);
        Sustained {
            rate: env_or("BENCH_RATE", 5_000.0),
            seconds,
            outage: env_or("BENCH_OUTAGE", 0),
            warmup: env_or("BENCH_WARMUP", 10.0_f64).min(seconds / 2.0),
            drain: env_or("BENCH_DRAIN", 120.0),
            users: env_or("BENCH_USERS", USERS),
        }
    }
}

pub async fn run_sustained(
    bootstrap: &str,
    topics: &Topics,
    params: &Sustained,
) -> serde_json::Value {
    let Sustained {
        rate,
        seconds,
        outage,
        warmup,
        drain,
        users,
    } = *params;
    assert!(
        rate > 0.0 && seconds > 0.0,
        "BENCH_RATE and BENCH_SECONDS must be positive"
    );
    assert!(outage < ORGS, "BENCH_OUTAGE must be below {ORGS}");
    let total = (rate * seconds).round() as usize;
    let is_healthy = |i: usize| i % ORGS >= outage;
    let healthy_total = (0..total).filter(|&i| is_healthy(i)).count();
    println!(
        "pipeline: sustained {rate:.0} records/s for {seconds:.0} s (~{} bytes each, {ORGS} organizations, {PARTITIONS} partitions, keys from {users} users); {}",
        record(0, users, "2026-11-27T09:00:00.000000Z").1.len(),
        if outage == 0 {
            "no organization down".to_owned()
        } else {
            format!("org-00..org-{:02} down (503 to every request; retries at 1, 2, 4, 8, 15 s, budget 20 s)", outage - 1)
        }
    );

    let receiver = Receiver::new(outage, healthy_total + 1024, false);
    let epoch = receiver.epoch;
    let ms = |at: Instant| at.duration_since(epoch).as_secs_f64() * 1000.0;
    let addr = start_receiver(receiver.clone()).await;

    // /metrics on a port fixed before the start (free a moment ago).
    let listen = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().to_string()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_service(&topics.config(bootstrap, &listen, addr, outage), dir.path());
    let pid = child.id();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let ready_by = Instant::now() + Duration::from_secs(120);
    loop {
        assert_running(&mut child);
        let ready = http
            .get(format!("http://{listen}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            break;
        }
        assert!(
            Instant::now() < ready_by,
            "the service was not ready within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // RSS every 200 ms; parked_in_memory every second.
    let stop_sampling = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (stop, http, listen) = (stop_sampling.clone(), http.clone(), listen.clone());
        tokio::spawn(async move {
            let mut rss = Vec::<(f64, f64)>::new();
            let mut parked_max = 0.0_f64;
            let mut ticker = tokio::time::interval(Duration::from_millis(200));
            let mut tick = 0u64;
            while !stop.load(Ordering::Relaxed) {
                ticker.tick().await;
                rss.push((epoch.elapsed().as_secs_f64() * 1000.0, vm_mb(pid, "VmRSS")));
                if tick % 5 == 0 {
                    if let Some(text) = scrape(&http, &listen).await {
                        parked_max = parked_max.max(metric_sum(
                            &text,
                            "consent_webhooks_parked_in_memory",
                            |_| true,
                        ));
                    }
                }
                tick += 1;
            }
            (rss, parked_max)
        })
    };

    // The paced producer: at any time, rate × elapsed records sent.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .create()
        .unwrap();
    let produce_errors = Arc::new(AtomicU64::new(0));
    let produce_start = Instant::now();
    let p0 = ms(produce_start);
    let mut ticker = tokio::time::interval(Duration::from_millis(5));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let (mut sent, mut healthy_sent) = (0usize, 0usize);
    let mut at_warmup: Option<(usize, u64, f64, f64)> = None;
    let mut last_check = Instant::now();
    while sent < total {
        ticker.tick().await;
        let elapsed = produce_start.elapsed().as_secs_f64();
        if at_warmup.is_none() && elapsed >= warmup {
            at_warmup = Some((
                healthy_sent,
                receiver.down_requests.load(Ordering::Relaxed),
                cpu_seconds(&pid.to_string()),
                cpu_seconds("self"),
            ));
        }
        let due = ((rate * elapsed) as usize).min(total);
        let mut sends = Vec::with_capacity(due.saturating_sub(sent));
        let occurred_at = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
        while sent < due {
            let (key, value) = record(sent, users, &occurred_at);
            match producer.send_result(FutureRecord::to(&topics.input).key(&key).payload(&value)) {
                Ok(delivery) => sends.push(delivery),
                Err(_) => {
                    produce_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            healthy_sent += usize::from(is_healthy(sent));
            sent += 1;
        }
        if !sends.is_empty() {
            let errors = produce_errors.clone();
            tokio::spawn(async move {
                for s in sends {
                    if !matches!(s.await, Ok(Ok(_))) {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        if last_check.elapsed() >= Duration::from_millis(500) {
            assert_running(&mut child);
            last_check = Instant::now();
        }
    }
    let produce_end = Instant::now();
    let p_end = ms(produce_end);
    let produce_s = produce_end.duration_since(produce_start).as_secs_f64();
    let down_at_end = receiver.down_requests.load(Ordering::Relaxed);
    let (service_cpu_end, bench_cpu_end) = (cpu_seconds(&pid.to_string()), cpu_seconds("self"));
    let (healthy_at_warmup, down_at_warmup, service_cpu_warmup, bench_cpu_warmup) =
        at_warmup.unwrap_or((0, 0, 0.0, 0.0));
    println!(
        "pipeline: produced {sent} records in {produce_s:.1} s ({:.0}/s), {healthy_sent} to healthy organizations; {} produce errors",
        sent as f64 / produce_s,
        produce_errors.load(Ordering::Relaxed)
    );

    // Every healthy record delivered, or BENCH_DRAIN seconds.
    let drain_by = Instant::now() + Duration::from_secs_f64(drain);
    let mut ticker = tokio::time::interval(Duration::from_millis(50));
    while (receiver.delivered.load(Ordering::Relaxed) as usize) < healthy_total
        && Instant::now() < drain_by
    {
        assert_running(&mut child);
        ticker.tick().await;
    }
    let drained = Instant::now();
    let delivered_total = receiver.delivered.load(Ordering::Relaxed) as usize;
    let metrics = scrape(&http, &listen).await.unwrap_or_default();
    stop_sampling.store(true, Ordering::Relaxed);
    let (rss_samples, parked_in_memory_max) = sampler.await.unwrap();
    let hwm = vm_mb(pid, "VmHWM");
    let down_requests = receiver.down_requests.load(Ordering::Relaxed);
    stop_service(&mut child).await;

    // Healthy deliveries received in the steady window, and latency of the records produced in
    // it (the delivery time of a record is its receive time; produce time = receive − latency).
    let (w0, w1) = (p0 + warmup * 1000.0, p_end);
    let window_s = (w1 - w0) / 1000.0;
    let samples = std::mem::take(&mut *receiver.samples.lock().unwrap());
    let received_in_window = samples
        .iter()
        .filter(|&&(r, _, _)| (w0..w1).contains(&f64::from(r)))
        .count();
    let deliveries_per_s = received_in_window as f64 / window_s;
    // The organizations that stay up in a BENCH_OUTAGE=3 run (org-03..org-63), in any run: the
    // figure to compare across runs with and without the outage.
    let compared_per_s = samples
        .iter()
        .filter(|&&(r, _, o)| usize::from(o) >= COMPARED_FROM && (w0..w1).contains(&f64::from(r)))
        .count() as f64
        / window_s;
    let produced_per_s = (healthy_sent - healthy_at_warmup) as f64 / window_s;
    let mut latencies: Vec<u32> = samples
        .iter()
        .filter(|&&(r, l, _)| (w0..w1).contains(&(f64::from(r) - f64::from(l) / 1000.0)))
        .map(|&(_, l, _)| l)
        .collect();
    latencies.sort_unstable();
    let (p50, p99, p999, max) = (
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        percentile(&latencies, 0.999),
        percentile(&latencies, 1.0),
    );
    let last_delivery = samples.iter().map(|&(r, _, _)| r).max().map(f64::from);
    let undelivered = healthy_total.saturating_sub(delivered_total);
    let caught_up_after_s = (undelivered == 0)
        .then(|| last_delivery.map(|last| ((last - p_end) / 1000.0).max(0.0)))
        .flatten();

    // Per 10 s of production: healthy deliveries/s and RSS max.
    // A last slice shorter than a second (the producer's final tick) joins the one before it.
    let slices = ((produce_s - 1.0) / 10.0).ceil().max(1.0) as usize;
    let mut slice_deliveries = vec![0usize; slices];
    for &(r, _, _) in &samples {
        let t = (f64::from(r) - p0) / 1000.0;
        if (0.0..produce_s).contains(&t) {
            slice_deliveries[((t / 10.0) as usize).min(slices - 1)] += 1;
        }
    }
    let slice_len = |k: usize| {
        if k + 1 == slices {
            produce_s - k as f64 * 10.0
        } else {
            10.0
        }
    };
    let deliveries_by_10s: Vec<f64> = slice_deliveries
        .iter()
        .enumerate()
        .map(|(k, &n)| (n as f64 / slice_len(k)).round())
        .collect();
    let mut rss_by_10s = vec![0.0_f64; slices];
    for &(t, mb) in &rss_samples {
        let t = (t - p0) / 1000.0;
        if (0.0..produce_s).contains(&t) {
            let k = ((t / 10.0) as usize).min(slices - 1);
            rss_by_10s[k] = rss_by_10s[k].max(round(mb, 1));
        }
    }
    let rss_max = rss_samples.iter().map(|&(_, mb)| mb).fold(0.0, f64::max);
    let rss_steady_max = rss_samples
        .iter()
        .filter(|&&(t, _)| (w0..=ms(drained)).contains(&t))
        .map(|&(_, mb)| mb)
        .fold(0.0, f64::max);

    // The down organizations, from the service's metrics.
    let down = |labels: &str| org_index(labels).is_some_and(|o| o < outage);
    let dead_letters = metric_sum(&metrics, "consent_webhooks_dead_letters_total", down);
    let healthy = |labels: &str| org_index(labels).is_some_and(|o| o >= outage);
    let parks_down = by_label(&metrics, "consent_webhooks_parks_total", down, "reason");
    let parks_healthy = by_label(&metrics, "consent_webhooks_parks_total", healthy, "reason");
    let dead_letters_down = by_label(
        &metrics,
        "consent_webhooks_dead_letters_total",
        down,
        "reason",
    );
    let dead_letters_healthy = metric_sum(&metrics, "consent_webhooks_dead_letters_total", healthy);
    let unparks_down = metric_sum(&metrics, "consent_webhooks_unparks_total", down);
    let show = |counts: &BTreeMap<String, f64>| {
        if counts.is_empty() {
            "none".to_owned()
        } else {
            counts
                .iter()
                .map(|(r, n)| format!("{r} {n:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let down_window_per_s = (down_at_end - down_at_warmup) as f64 / window_s;
    // CPU cores used during the steady window: the service, and this process (producer and
    // receiver); the broker has the rest of the machine.
    let service_cores = (service_cpu_end - service_cpu_warmup) / window_s;
    let bench_cores = (bench_cpu_end - bench_cpu_warmup) / window_s;

    println!(
        "pipeline: healthy organizations: {deliveries_per_s:.0} deliveries/s over {:.0}-{:.0} s of production ({produced_per_s:.0} produced/s, ratio {:.3}; org-03..org-63 alone {compared_per_s:.0}/s); latency p50 {p50:.1} ms, p99 {p99:.1} ms, p99.9 {p999:.1} ms, max {max:.1} ms ({} records); {}",
        warmup,
        produce_s,
        deliveries_per_s / produced_per_s,
        latencies.len(),
        match caught_up_after_s {
            Some(s) => format!("all {healthy_total} delivered {s:.1} s after production ended"),
            None => format!("{undelivered} of {healthy_total} NOT delivered {drain:.0} s after production ended"),
        }
    );
    if outage > 0 {
        println!(
            "pipeline: down organizations (org-00..org-{:02}): {down_requests} requests received ({down_window_per_s:.0}/s during the steady window), {dead_letters:.0} dead letters ({}), parks {}, unparks {unparks_down:.0}; healthy organizations: parks {}, dead letters {dead_letters_healthy:.0}",
            outage - 1,
            show(&dead_letters_down),
            show(&parks_down),
            show(&parks_healthy),
        );
    }
    println!(
        "pipeline: service RSS max {rss_max:.0} MB (VmRSS every 200 ms; steady part {rss_steady_max:.0} MB; by 10 s: {}), VmHWM {hwm:.0} MB; parked events in memory max {parked_in_memory_max:.0}; CPU during the steady part: service {service_cores:.2} cores, benchmark process (producer + receiver) {bench_cores:.2}",
        rss_by_10s
            .iter()
            .map(|mb| format!("{mb:.0}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let unparsable = receiver.unparsable.load(Ordering::Relaxed);
    if unparsable > 0 {
        println!("pipeline: {unparsable} healthy deliveries without a readable created_at");
    }
    json!({
            "mode": "sustained",
            "rate": rate,
            "seconds": seconds,
            "warmup_seconds": warmup,
            "outage_organizations": outage,
            "users": users,
            "organizations": ORGS,
            "partitions": PARTITIONS,
            "produced": sent,
            "produce_seconds": round(produce_s, 2),
            "produce_errors": produce_errors.load(Ordering::Relaxed),
            "healthy_produced": healthy_total,
            "healthy_delivered": delivered_total,
            "healthy_undelivered": undelivered,
            "healthy_caught_up_after_seconds": caught_up_after_s.map(|s| round(s, 2)),
            "healthy_produced_per_s": produced_per_s.round(),
            "healthy_deliveries_per_s": deliveries_per_s.round(),
            "org_03_63_deliveries_per_s": compared_per_s.round(),
            "healthy_deliveries_per_s_by_10s": deliveries_by_10s,
            "latency_ms": {
                "p50": round(p50, 1),
                "p99": round(p99, 1),
                "p999": round(p999, 1),
                "max": round(max, 1),
                "samples": latencies.len(),
            },
            "down_produced": total - healthy_total,
            "down_requests": down_requests,
            "down_requests_per_s": down_window_per_s.round(),
            "down_dead_letters": dead_letters,
            "down_dead_letters_by_reason": dead_letters_down,
            "down_parks": parks_down,
            "down_unparks": unparks_down,
            "healthy_parks": parks_healthy,
            "healthy_dead_letters": dead_letters_healthy,
            "parked_in_memory_max": parked_in_memory_max,
            "rss_max_mb": round(rss_max, 1),
            "rss_steady_max_mb": round(rss_steady_max, 1),
            "rss_by_10s_mb": rss_by_10s,
            "vm_hwm_mb": round(hwm, 1),
            "service_cpu_cores": round(service_cores, 2),
            "bench_cpu_cores": round(bench_cores, 2),
            "unparsable_deliveries": unparsable,
    })
}
