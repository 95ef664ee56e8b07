//! The organization registry at scale: `cargo bench --bench registry`.
//!
//! Writes BENCH_ORGANIZATIONS (default 5,000) organizations to a fresh registry topic (each
//! with its own endpoint path on a local receiver and a signing secret from an environment
//! variable, as a registry would hold them), starts the release binary `consent-webhooks run`
//! with the registry on and no organization in its file, and measures:
//!
//! - the start-up catch-up: from the process start to every organization applied
//!   (`consent_webhooks_registry_organizations` on `/metrics`, polled every 20 ms), and to
//!   partitions assigned (input taken only after the registry was read to its end);
//! - one record per organization produced afterwards: the time until every one is delivered
//!   (every registered organization is live);
//! - the service's RSS after the catch-up and its peak (VmHWM) at the end; its CPU seconds.
//!
//! Uses KAFKA_BOOTSTRAP_SERVERS, or the project's local broker (started on the test port).
//! Prints one JSON line of the figures.

mod common;

use std::time::{Duration, Instant};

use common::{
    admin, bootstrap, cpu_seconds, env_or, record_of, round, scrape, spawn_service, start_receiver,
    stop_service, vm_mb, Receiver, Topics,
};
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

const SIGNING_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let organizations: usize = env_or("BENCH_ORGANIZATIONS", 5_000);
    let bootstrap = bootstrap();
    let admin = admin(&bootstrap);
    let topics = Topics::new();
    topics.create(&admin).await;
    let registry = format!("bench-organizations-{}", std::process::id());
    let topic = NewTopic::new(&registry, 1, TopicReplication::Fixed(1))
        .set("cleanup.policy", "compact")
        .set("message.timestamp.type", "LogAppendTime");
    for r in admin
        .create_topics([&topic], &AdminOptions::new())
        .await
        .unwrap()
    {
        r.unwrap_or_else(|(t, e)| panic!("create {t}: {e}"));
    }

    let receiver = Receiver::new(0, 0, false);
    let address = start_receiver(receiver.clone()).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("linger.ms", "20")
        .create()
        .unwrap();
    let names: Vec<String> = (0..organizations).map(|o| format!("org-{o:04}")).collect();
    let written = Instant::now();
    let sends = names.iter().map(|org| {
        let value = format!(
            r#"{{"url": "http://{address}/{org}", "allow_http": true, "allow_private_addresses": true, "signing_secret": {{"env": "BENCH_SIGNING_SECRET"}}, "concurrency": 4}}"#
        );
        let producer = producer.clone();
        let registry = registry.clone();
        async move {
            producer
                .send(
                    FutureRecord::to(&registry).key(org).payload(&value),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| e)
                .unwrap();
        }
    });
    futures::future::join_all(sends).await;
    eprintln!(
        "registry: {organizations} organizations written in {:.1} s",
        written.elapsed().as_secs_f64()
    );

    let listen = format!("127.0.0.1:{}", free_port());
    let config = format!(
        "[kafka]\nbrokers = \"{bootstrap}\"\ngroup_id = \"{}\"\ninput_topic = \"{}\"\ndead_letter_topic = \"{}\"\nrejected_topic = \"{}\"\nretry_topic = \"{}\"\n[server]\nlisten = \"{listen}\"\n[registry]\nenabled = true\ntopic = \"{registry}\"\n",
        topics.group, topics.input, topics.dead_letter, topics.rejected, topics.retry
    );
    let dir = tempfile::tempdir().unwrap();
    // The child inherits it: every organization's secret reference names it.
    std::env::set_var("BENCH_SIGNING_SECRET", SIGNING_SECRET);
    let started = Instant::now();
    let mut service = spawn_service(&config, dir.path());
    let pid = service.id();
    let client = reqwest::Client::new();
    let value = |text: &str, name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut caught_up = None;
    let assigned = loop {
        common::assert_running(&mut service);
        assert!(
            Instant::now() < deadline,
            "the registry was not read within 300 s"
        );
        if let Some(text) = scrape(&client, &listen).await {
            if caught_up.is_none()
                && value(&text, "consent_webhooks_registry_organizations") as usize == organizations
            {
                caught_up = Some(started.elapsed());
            }
            if caught_up.is_some() && value(&text, "consent_webhooks_ready") == 1.0 {
                break started.elapsed();
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let caught_up = caught_up.expect("caught up");
    let rss_after_catch_up = vm_mb(pid, "VmRSS");

    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let produced = Instant::now();
    let sends = names.iter().enumerate().map(|(i, org)| {
        let (key, value) = record_of(org, i, organizations, &now);
        let producer = producer.clone();
        let input = topics.input.clone();
        async move {
            producer
                .send(
                    FutureRecord::to(&input).key(&key).payload(&value),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| e)
                .unwrap();
        }
    });
    futures::future::join_all(sends).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while (receiver
        .delivered
        .load(std::sync::atomic::Ordering::Relaxed) as usize)
        < organizations
    {
        common::assert_running(&mut service);
        assert!(
            Instant::now() < deadline,
            "only {} of {organizations} organizations' records delivered within 120 s",
            receiver
                .delivered
                .load(std::sync::atomic::Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all_delivered = produced.elapsed();
    let peak = vm_mb(pid, "VmHWM");
    let cpu = cpu_seconds(&pid.to_string());
    stop_service(&mut service).await;
    topics.delete(&admin).await;
    let _ = admin
        .delete_topics(&[registry.as_str()], &AdminOptions::new())
        .await;

    let figures = serde_json::json!({
        "organizations": organizations,
        "catch_up_s": round(caught_up.as_secs_f64(), 2),
        "ready_s": round(assigned.as_secs_f64(), 2),
        "one_record_each_delivered_s": round(all_delivered.as_secs_f64(), 2),
        "rss_after_catch_up_mb": round(rss_after_catch_up, 1),
        "peak_rss_mb": round(peak, 1),
        "service_cpu_s": round(cpu, 2),
    });
    eprintln!(
        "registry: {organizations} organizations read to the end {:.2} s after start (ready {:.2} s), RSS {:.0} MB; one record each delivered in {:.2} s; peak RSS {:.0} MB",
        caught_up.as_secs_f64(),
        assigned.as_secs_f64(),
        rss_after_catch_up,
        all_delivered.as_secs_f64(),
        peak
    );
    println!("{figures}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
