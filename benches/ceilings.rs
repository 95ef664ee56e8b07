//! The pipeline against its ceilings, in one run: `cargo bench --bench ceilings`.
//!
//! On the local real broker (KAFKA_BOOTSTRAP_SERVERS, or the project's own, started on the test
//! port) and one in-process axum receiver, with BENCH_RECORDS (default 100,000) records of
//! ~1 KB over 64 organizations and 8 partitions, it measures:
//!
//! - (c) the pipeline end to end: the records produced up front, then the release binary
//!   `consent-webhooks run` started; deliveries/s from the first to the last delivery. The
//!   receiver sums a hash of every body it gets (its digest);
//! - (d) the service's CPU time per delivery (user + system from `/proc/<pid>/stat`, start-up
//!   included) and its peak RSS (VmHWM);
//! - (a) raw consume: a bare rdkafka consumer (no group, no processing) reading the same input
//!   topic from its start; records/s from its first record to its last. It runs between the
//!   produce and (c): run after (c), it read a broker done with the produce while (c) read one
//!   still busy with it. Now (c) has the settled broker and (a), a ceiling, the less
//!   favourable moment;
//! - (b) raw POST: a bare pooled client (hyper's, the one the service posts with) sending the
//!   bodies of the same records (derived by the pure core; the two receivers' digests prove
//!   them the ones (c) delivered), to the same organizations' paths of a receiver of the same
//!   kind, with the service's request concurrency (`max_in_flight_requests` = 256); requests/s;
//! - (e) latency from each record's timestamp to its 2xx, p50/p99/max, at the fixed offered
//!   loads of BENCH_LOADS (default `2000,10000` records/s), BENCH_SECONDS each (default 30,
//!   the first BENCH_WARMUP, default 5, not counted);
//!
//! and prints them side by side with the efficiency (c) / min(a, b), writing every figure to
//! BENCH_OUT (default `target/bench-ceilings.json`).
//!
//! (a) to (d) run BENCH_TRIALS times (default 3), on fresh topics each time: a figure is the
//! median of the trials (the efficiency, the median of each trial's own; peak RSS, the highest),
//! and every trial is printed and written too, so the spread is in plain sight.
//!
//! How the receiver was checked not to be the limit: in (b) the same receiver takes the bare
//! client's requests, and both run in this process; (b)'s rate is the most the receiver and a
//! client together can do, an upper bound the pipeline must share with the broker. With four
//! CPUs or more (or BENCH_PIN=1) and `taskset`, the service runs on CPU 0 and this process on
//! the last CPU; the broker is not pinned. On two cores pinning starves the service (measured:
//! p99 970 ms at 2,000/s pinned, 12 ms not), so nothing is pinned by default there: everything
//! shares the machine, and figures should come from a quiet one.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioExecutor;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;

use consent_webhooks::derive::{derive_record, Derived, Rules};

use common::{
    admin, bootstrap, burst_record, deliver_burst, env_or, produce_burst, round, run_sustained,
    start_receiver, Receiver, Sustained, Topics, ORGS, PARTITIONS, USERS,
};

/// The service's `max_in_flight_requests` in the benchmark's configuration.
const CONCURRENCY: usize = 256;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = env_or("BENCH_RECORDS", 100_000);
    let loads: Vec<f64> = std::env::var("BENCH_LOADS")
        .unwrap_or_else(|_| "2000,10000".into())
        .split(',')
        .map(|l| {
            l.trim()
                .parse()
                .unwrap_or_else(|_| panic!("BENCH_LOADS: {l:?} is not a rate"))
        })
        .collect();
    let trials_n: usize = env_or("BENCH_TRIALS", 3_usize).max(1);
    let seconds: f64 = env_or("BENCH_SECONDS", 30.0);
    let warmup: f64 = env_or("BENCH_WARMUP", 5.0_f64).min(seconds / 2.0);
    let out = std::env::var("BENCH_OUT").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-ceilings.json").to_owned()
    });
    let pinned = pin_cpus();

    let bootstrap = bootstrap();
    let admin = admin(&bootstrap);

    // (a), (c), (d) and (b), `trials` times: this machine's neighbours move any one run by up
    // to a third, so each figure is the median of the trials, and every trial is printed.
    // (b)'s bodies: what the pure core derives from the records every trial writes.
    let bodies = bodies(n);
    let mut trials = Vec::with_capacity(trials_n);
    for trial in 1..=trials_n {
        println!("ceilings: trial {trial} of {trials_n}");
        let topics = Topics::new();
        topics.create(&admin).await;
        let produced = produce_burst(&bootstrap, &topics, n).await;
        // (a) first, so that (c) reads from a broker done with the produce (see the module docs).
        let consume_per_s = raw_consume(&bootstrap, &topics.input, n);
        // (c) and (d).
        let (pipeline, delivered) = deliver_burst(&bootstrap, &topics, produced, true).await;
        topics.delete(&admin).await;
        // (b) with the same bodies, checked against what (c) delivered.
        let (post_per_s, receiver_check, posted) = raw_post(bodies.clone()).await;
        assert_eq!(
            posted, delivered,
            "(b) sent the bodies (c) delivered, each once (receivers' digests)"
        );
        trials.push(Trial {
            consume_per_s,
            post_per_s,
            receiver_check,
            pipeline,
        });
    }

    // (e) at each fixed load.
    let mut latency = Vec::new();
    for rate in &loads {
        let topics = Topics::new();
        topics.create(&admin).await;
        let params = Sustained {
            rate: *rate,
            seconds,
            outage: 0,
            warmup,
            drain: 120.0,
            users: USERS,
        };
        let figures = run_sustained(&bootstrap, &topics, &params).await;
        topics.delete(&admin).await;
        latency.push(json!({
            "offered_per_s": rate,
            "delivered_per_s": figures["healthy_deliveries_per_s"],
            "latency_ms": figures["latency_ms"],
            "service_cpu_cores": figures["service_cpu_cores"],
            "rss_max_mb": figures["rss_max_mb"],
        }));
    }

    let consume_per_s = median(trials.iter().map(|t| t.consume_per_s));
    let post_per_s = median(trials.iter().map(|t| t.post_per_s));
    let pipeline_per_s = median(trials.iter().map(Trial::pipeline_per_s));
    let cpu_us = median(trials.iter().map(Trial::cpu_us));
    let efficiency = median(trials.iter().map(Trial::efficiency));
    // Peak memory is a limit, not a typical value: the highest of the trials.
    let rss_mb = trials
        .iter()
        .map(|t| t.pipeline["vm_hwm_mb"].as_f64().unwrap_or(0.0))
        .fold(0.0, f64::max);
    println!();
    println!(
        "ceilings: {n} records of ~{} bytes, {ORGS} organizations, {PARTITIONS} partitions{}",
        trials[0].pipeline["record_bytes"],
        if pinned {
            "; service on CPU 0, benchmark on the last CPU"
        } else {
            "; nothing pinned"
        }
    );
    for (i, t) in trials.iter().enumerate() {
        println!(
            "  trial {}: (a) {:.0}/s, (b) {:.0}/s (receiver alone saw {:.0}/s), (c) {:.0}/s, (d) {:.1} µs, {} MB, efficiency {:.2}",
            i + 1,
            t.consume_per_s,
            t.post_per_s,
            t.receiver_check,
            t.pipeline_per_s(),
            t.cpu_us(),
            t.pipeline["vm_hwm_mb"],
            t.efficiency()
        );
    }
    let of = format!("median of {trials_n}");
    println!("  (a) raw consume            {consume_per_s:>10.0} records/s ({of})");
    println!("  (b) raw POST ({CONCURRENCY} at once) {post_per_s:>10.0} requests/s ({of})");
    println!("  (c) pipeline end to end    {pipeline_per_s:>10.0} deliveries/s ({of})");
    println!(
        "  (d) service CPU            {cpu_us:>10.1} µs per delivery ({of}), peak RSS {rss_mb} MB (highest)"
    );
    for l in &latency {
        println!(
            "  (e) at {:>6}/s offered     p50 {} ms, p99 {} ms, max {} ms ({} delivered/s)",
            l["offered_per_s"],
            l["latency_ms"]["p50"],
            l["latency_ms"]["p99"],
            l["latency_ms"]["max"],
            l["delivered_per_s"]
        );
    }
    println!("  efficiency (c) / min(a, b) {efficiency:>10.2} (median of the trials' own)");
    let figures = json!({
        "date": chrono::Utc::now().to_rfc3339(),
        "records": n,
        "pinned": pinned,
        "trials": trials.iter().map(|t| json!({
            "raw_consume_per_s": t.consume_per_s.round(),
            "raw_post_per_s": t.post_per_s.round(),
            "receiver_alone_per_s": t.receiver_check.round(),
            "pipeline": t.pipeline,
            "efficiency": round(t.efficiency(), 3),
        })).collect::<Vec<_>>(),
        "median": {
            "raw_consume_per_s": consume_per_s.round(),
            "raw_post_per_s": post_per_s.round(),
            "deliveries_per_s": pipeline_per_s.round(),
            "service_cpu_us_per_delivery": round(cpu_us, 1),
            "efficiency": round(efficiency, 3),
        },
        "vm_hwm_mb_highest": rss_mb,
        "latency": latency,
    });
    std::fs::write(&out, serde_json::to_string_pretty(&figures).unwrap()).unwrap();
    println!("ceilings: figures written to {out}");
    println!("{figures}");
}

/// One pass of (a), (c), (d) and (b) over the same records.
struct Trial {
    consume_per_s: f64,
    post_per_s: f64,
    /// The rate the receiver saw in (b): with (b) itself, how it was checked not to be the limit.
    receiver_check: f64,
    /// [`deliver_burst`]'s figures: (c) and (d).
    pipeline: serde_json::Value,
}

impl Trial {
    fn pipeline_per_s(&self) -> f64 {
        self.pipeline["deliveries_per_s"].as_f64().unwrap_or(0.0)
    }

    fn cpu_us(&self) -> f64 {
        self.pipeline["service_cpu_us_per_delivery"]
            .as_f64()
            .unwrap_or(f64::NAN)
    }

    /// (c) / min(a, b), within the trial: the three measured minutes apart, not hours.
    fn efficiency(&self) -> f64 {
        self.pipeline_per_s() / self.consume_per_s.min(self.post_per_s)
    }
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// With `taskset` and four CPUs or more (two or more with BENCH_PIN=1): the service on the
/// first CPUs (through BENCH_SERVICE_CPUS), every thread of this process on the last CPU.
/// Whether it did.
fn pin_cpus() -> bool {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let wanted = std::env::var("BENCH_PIN").map_or(cpus >= 4, |v| v == "1");
    if cpus < 2 || !wanted {
        return false;
    }
    let last = (cpus - 1).to_string();
    let pinned = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", &last, &std::process::id().to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if pinned {
        let service = if cpus > 2 {
            format!("0-{}", cpus - 2)
        } else {
            "0".to_owned()
        };
        std::env::set_var("BENCH_SERVICE_CPUS", service);
    } else {
        eprintln!("ceilings: taskset unavailable; nothing pinned");
    }
    pinned
}

/// (a): a bare consumer reads `n` records of `topic` from its start; records/s from the first
/// record to the last, as (c) is timed from the first delivery (connecting and the first fetch
/// are left out of both).
fn raw_consume(bootstrap: &str, topic: &str, n: usize) -> f64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "bench-raw-consume")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        list.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&list).unwrap();
    let mut read = 0usize;
    let mut bytes = 0usize;
    let mut first = None;
    let deadline = Instant::now() + Duration::from_secs(300);
    while read < n {
        assert!(
            Instant::now() < deadline,
            "raw consume: {read} of {n} in 300 s"
        );
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            first.get_or_insert_with(Instant::now);
            read += 1;
            bytes += message.payload_len();
        }
    }
    let per_s = n as f64 / first.expect("n records read").elapsed().as_secs_f64();
    println!(
        "ceilings: raw consume read {read} records ({} MB) at {per_s:.0}/s",
        bytes / 1_000_000
    );
    per_s
}

/// The body of every record the burst wrote, with its organization's number: derived by the
/// pure core, as the service derives them.
fn bodies(n: usize) -> Vec<(u8, Bytes)> {
    let rules = Rules::default();
    (0..n)
        .map(|i| {
            let (_, record) = burst_record(i);
            match derive_record(record.as_bytes(), &rules) {
                Ok(Derived::Webhook(event)) => {
                    let org = event.organization_id.strip_prefix("org-").unwrap();
                    (org.parse().unwrap(), event.body)
                }
                other => panic!("record {i} derives no webhook: {other:?}"),
            }
        })
        .collect()
}

/// (b): a bare pooled client sends `bodies` to a fresh receiver, `CONCURRENCY` at a time;
/// requests/s, the rate the receiver itself saw, and its [`Receiver::digest`].
async fn raw_post(bodies: Vec<(u8, Bytes)>) -> (f64, f64, Option<u64>) {
    let receiver = Receiver::new(0, 0, true);
    let addr = start_receiver(receiver.clone()).await;
    // A bare pooled client over hyper (hyper-util's; the service keeps a pool of its own over the
    // same hyper connections, src/delivery/http.rs): no guard, no TLS.
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(CONCURRENCY)
        .build_http::<Full<Bytes>>();
    let n = bodies.len();
    let start = Instant::now();
    let failed = futures::stream::iter(bodies)
        .map(|(org, body)| {
            let request = http::Request::post(format!("http://{addr}/org-{org:02}"))
                .header("content-type", "application/json")
                .body(Full::new(body))
                .unwrap();
            let sent = client.request(request);
            async move {
                let response = sent.await?;
                let ok = response.status().is_success();
                response.into_body().collect().await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(ok)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .filter(|r| std::future::ready(!matches!(r, Ok(true))))
        .count()
        .await;
    let elapsed = start.elapsed().as_secs_f64();
    assert_eq!(failed, 0, "raw POST: {failed} of {n} requests failed");
    // Acquire: the digest's additions come before the count's (see `receive`).
    let seen = receiver.delivered.load(Ordering::Acquire) as f64;
    let first = receiver.first.lock().unwrap().unwrap_or(start);
    let receiver_per_s = seen / first.elapsed().as_secs_f64();
    println!(
        "ceilings: raw POST sent {n} requests at {:.0}/s",
        n as f64 / elapsed
    );
    let digest = receiver.digest.as_ref().map(|d| d.load(Ordering::Relaxed));
    (n as f64 / elapsed, receiver_per_s, digest)
}
