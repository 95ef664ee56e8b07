//! End-to-end benchmark: `cargo bench --bench pipeline`.
//!
//! A real Kafka broker (KAFKA_BOOTSTRAP_SERVERS, or the project's local one started on the test
//! port), ~1 KB consent changes over 64 organizations and 8 partitions, a local HTTP receiver
//! (axum, in this process), and the release binary `consent-webhooks run` as a child process.
//! Every run creates its own topics (input, retry with as many partitions as the input,
//! dead-letter, rejected; names suffixed with the process id and the time, so runs can share a
//! broker) and deletes them at the end (BENCH_KEEP_TOPICS=1 keeps them).
//!
//! Two modes:
//!
//! - **Burst** (the default): BENCH_RECORDS (default 100,000) records produced up front, then
//!   the service started. Reports deliveries/s from the first to the last delivery, and the
//!   service's peak RSS (VmHWM).
//! - **Sustained / isolation** (when any of BENCH_RATE, BENCH_SECONDS or BENCH_OUTAGE is set):
//!   the service is started first, then a paced producer writes BENCH_RATE records/s (default
//!   5,000) for BENCH_SECONDS (default 60). Each record's `occurred_at` is the time it was
//!   produced (microseconds); the webhook body carries it verbatim as `created_at`, so the
//!   receiver measures the delivery latency (receive time − produce time). Organizations
//!   0..BENCH_OUTAGE (default 0) answer 503 to every request for the whole run (an outage longer
//!   than the run), with a compressed retry policy (retries at 1, 2, 4, 8 and 15 s, no jitter,
//!   budget 20 s) so that the run sees parking and dead-lettering. Reported: for the healthy
//!   organizations, deliveries/s over the steady part of the run (BENCH_WARMUP, default 10 s,
//!   to the end of production) and p50/p99/max latency of the records produced in it; for the
//!   down ones, the requests received and, from the service's /metrics, dead letters and parks;
//!   the service's RSS sampled every 200 ms (VmRSS, max, and per 10 s) and its VmHWM at the end;
//!   the CPU cores used by the service and by this process during the steady part.
//!   After production the benchmark waits (up to BENCH_DRAIN, default 120 s) until every record
//!   of a healthy organization is delivered. Compare BENCH_OUTAGE=3 with BENCH_OUTAGE=0 at the
//!   same BENCH_RATE. Record i is for user i % BENCH_USERS (default 20,000, as in the burst
//!   mode): the key is `organization/user`, so this sets how often a key recurs, and hence how
//!   many events of one key queue behind a parked one.
//!
//! Both modes end with one JSON line of all figures.

mod common;

use common::{admin, bootstrap, env_or, run_burst, run_sustained, Sustained, Topics};

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let sustained = ["BENCH_RATE", "BENCH_SECONDS", "BENCH_OUTAGE"]
        .iter()
        .any(|v| std::env::var_os(v).is_some());
    let bootstrap = bootstrap();
    let admin = admin(&bootstrap);
    let topics = Topics::new();
    topics.create(&admin).await;
    let figures = if sustained {
        run_sustained(&bootstrap, &topics, &Sustained::from_env()).await
    } else {
        run_burst(&bootstrap, &topics, env_or("BENCH_RECORDS", 100_000)).await
    };
    println!("{figures}");
    topics.delete(&admin).await;
}
