//! End-to-end throughput: `cargo bench --bench pipeline`.
//!
//! A real Kafka broker (KAFKA_BOOTSTRAP_SERVERS, or the project's local one started on the test
//! port), BENCH_RECORDS (default 100,000) ~1 KB consent changes over 64 organizations and 8
//! partitions produced up front, a local HTTP receiver (axum, in this process), and the release
//! binary `consent-webhooks run` as a child process. Reports deliveries/s from the first to the
//! last delivery, and the service's peak RSS (VmHWM).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::Router;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

const ORGS: usize = 64;
const PARTITIONS: i32 = 8;

fn bootstrap() -> String {
    if let Ok(b) = std::env::var("KAFKA_BOOTSTRAP_SERVERS") {
        return b;
    }
    let out = std::process::Command::new("bash")
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

fn record(i: usize) -> (String, String) {
    let org = format!("org-{:02}", i % ORGS);
    let user = format!("user-{}", i % 20_000);
    let padding = "x".repeat(560);
    let value = format!(
        r#"{{"id":"bench-{i}","organization_id":"{org}","occurred_at":"2026-11-27T09:00:00Z","entity_type":"user","action":"created","after":{{"id":"{user}","organization_id":"{org}","organization_user_id":"{user}@example.com","consents":{{"purposes":[{{"id":"analytics","enabled":true}},{{"id":"marketing","enabled":false}}],"vendors":{{"enabled":["google","criteo"],"disabled":[]}}}},"metadata":{{"note":"{padding}"}}}}}}"#
    );
    (format!("{org}/{user}"), value)
}

fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let n: usize = std::env::var("BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let bootstrap = bootstrap();
    let suffix = std::process::id();
    let topic = format!("bench-changes-{suffix}");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let topics = [
        NewTopic::new(&topic, PARTITIONS, TopicReplication::Fixed(1)),
        NewTopic::new("bench-dead-letter", 1, TopicReplication::Fixed(1)),
        NewTopic::new("bench-rejected", 1, TopicReplication::Fixed(1)),
    ];
    for r in admin
        .create_topics(&topics, &AdminOptions::new())
        .await
        .unwrap()
    {
        if let Err((t, e)) = r {
            if !e.to_string().contains("already exists") {
                panic!("create {t}: {e}");
            }
        }
    }

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .create()
        .unwrap();
    let start = Instant::now();
    let mut sends = Vec::with_capacity(10_000);
    for i in 0..n {
        let (key, value) = record(i);
        sends.push(
            producer
                .send_result(FutureRecord::to(&topic).key(&key).payload(&value))
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
    println!(
        "pipeline: produced {n} records (~{} bytes each) in {:.1} s",
        record(0).1.len(),
        start.elapsed().as_secs_f64()
    );

    let delivered = Arc::new(AtomicU64::new(0));
    let first = Arc::new(Mutex::new(None::<Instant>));
    let app = {
        let (delivered, first) = (delivered.clone(), first.clone());
        Router::new().route(
            "/{org}",
            post(move || {
                let (delivered, first) = (delivered.clone(), first.clone());
                async move {
                    first.lock().unwrap().get_or_insert_with(Instant::now);
                    delivered.fetch_add(1, Ordering::Relaxed);
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let mut config = format!(
        "[kafka]\nbrokers = \"{bootstrap}\"\ngroup_id = \"bench-{suffix}\"\ninput_topic = \"{topic}\"\ndead_letter_topic = \"bench-dead-letter\"\nrejected_topic = \"bench-rejected\"\n[server]\nlisten = \"127.0.0.1:0\"\n[delivery]\nmax_in_flight_requests = 256\nendpoint_concurrency = 8\n"
    );
    for o in 0..ORGS {
        config += &format!("[organizations.org-{o:02}]\nurl = \"http://{addr}/org-{o:02}\"\nallow_http = true\nallow_private_addresses = true\n");
    }
    let config_path = dir.path().join("bench.toml");
    std::fs::write(&config_path, config).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_consent-webhooks"))
        .args(["run", "--config"])
        .arg(&config_path)
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = child.id();

    let deadline = Instant::now() + Duration::from_secs(600);
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    while (delivered.load(Ordering::Relaxed) as usize) < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} delivered in 600 s",
            delivered.load(Ordering::Relaxed)
        );
        ticker.tick().await;
    }
    let elapsed = first.lock().unwrap().unwrap().elapsed();
    let rss = peak_rss_mb(pid);
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    println!(
        "pipeline: {n} deliveries to {ORGS} organizations in {:.2} s = {:.0} deliveries/s; service peak RSS {:.0} MB",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        rss
    );
}
