//! `consent-webhooks run`: the whole pipeline, and its one shutdown path.
//!
//! consumer thread (ingest: parse, derive; retry reader) → bounded channel → dispatcher (lanes,
//! first attempts, parked events' retries) → retry / dead-letter / rejected producers. Offsets
//! move only as work completes or is parked.
//!
//! Shutdown (`stop` cancelled, e.g. on SIGTERM): the consumer stops polling; in-flight work
//! gets `drain_timeout`; what is left is cancelled (not committed, so consumed again after a
//! restart); done offsets are committed synchronously; the consumer leaves the group; the
//! producers are flushed; `run` returns. A fatal producer error (authorization, fatal
//! idempotent-producer state; see [`crate::deadletter`]) takes the same path: readiness fails at
//! once, `stop` is cancelled, and `run` returns the error once the drain is over.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::config::Settings;
use crate::deadletter::Producers;
use crate::delivery::{Deliverer, TokenSource};
use crate::dispatch::{Dispatcher, Parts};
use crate::ingest::{Ingest, IngestState, RetryReader};
use crate::park::{Fetcher, Parking};
use crate::registry::{caught_up, Follower, Registry, Writer};
use crate::telemetry::{health, Metrics};
use crate::work::Progress;

/// Capacity of the consumer → dispatcher channel. The dispatcher never waits on I/O to take
/// from it, so it rarely fills; memory is bounded by `max_pending_records` (pause) anyway.
const WORK_CHANNEL_CAPACITY: usize = 1024;

/// How long a topic may take to show up in the metadata before the start fails.
const TOPIC_CHECK_PATIENCE: Duration = Duration::from_secs(15);

/// Runs until `stop` is cancelled, then drains and returns.
pub async fn run(settings: Settings, stop: CancellationToken) -> anyhow::Result<()> {
    let abandon = CancellationToken::new();
    let progress = Arc::new(Progress::new(abandon.clone()));
    let retry_progress = Arc::new(Progress::new(abandon.clone()));
    let parking = Arc::new(Parking::default());
    let state = Arc::new(IngestState::default());
    let started_at = chrono::Utc::now().timestamp_millis();
    let metrics = Arc::new(Metrics::new(
        settings
            .organizations
            .iter()
            .filter(|(_, org)| org.metrics_label != Some(false))
            .map(|(id, _)| id.as_str()),
    ));
    let registry = Registry::new(&settings);
    if let Some(registry) = &settings.registry {
        crate::registry::check_topic(&settings.kafka, &registry.topic).await?;
    }
    let producers = Producers::new(&settings.kafka)
        .context("creating the Kafka producer")?
        .with_metrics(&metrics);
    check_topics(&producers, &settings).await?;
    let deliverer = Deliverer::new(&settings.delivery).context("creating the HTTP client")?;
    let retry = RetryReader::new(
        &settings,
        retry_progress.clone(),
        parking.clone(),
        metrics.clone(),
        producers.clone(),
    )
    .context("creating the retry reader's Kafka consumer")?;
    let ingest = Ingest::new(
        &settings,
        progress.clone(),
        state.clone(),
        metrics.clone(),
        Arc::new(retry),
    )
    .context("creating the Kafka consumer")?;
    let tasks = TaskTracker::new();
    let dispatcher = Dispatcher::new(
        &settings,
        deliverer.clone(),
        registry.clone(),
        Parts {
            producers: producers.clone(),
            progress,
            retry_progress,
            parking: parking.clone(),
            fetcher: Arc::new(
                Fetcher::start(&settings).context("creating the retry fetch consumer")?,
            ),
            stop: stop.clone(),
            tasks: tasks.clone(),
            metrics: metrics.clone(),
        },
    );
    let follow_stop = CancellationToken::new();
    let follower = Follower::start(
        registry.clone(),
        &settings.kafka,
        dispatcher.organizations(),
        metrics.clone(),
        follow_stop.clone(),
    )?;
    let refresh = scrape_metrics(
        dispatcher.token_sources(),
        parking,
        registry.clone(),
        metrics.clone(),
    );
    let server_stop = CancellationToken::new();
    let address = health::serve(
        settings.server.listen,
        metrics.clone(),
        state.clone(),
        refresh,
        server_stop.clone(),
    )
    .await
    .with_context(|| {
        format!(
            "binding the operations endpoint on {}",
            settings.server.listen
        )
    })?;
    info!(%address, "serving /metrics, /healthz and /readyz");
    if let Some(admin) = &settings.admin {
        let writer = Writer::new(&settings.kafka, registry.clone())?;
        let mut complete = registry.watch_complete();
        let read_to_end = async move {
            let _ = complete.wait_for(|c| *c >= started_at).await;
        };
        let address = crate::admin::serve(
            admin,
            crate::admin::Admin::new(registry.clone(), writer, deliverer.clone()),
            read_to_end,
            server_stop.clone(),
        )
        .await
        .with_context(|| format!("binding the admin API on {}", admin.listen))?;
        info!(%address, "serving the admin API");
    }

    tokio::spawn(stop_on_fatal(
        producers.clone(),
        state.clone(),
        stop.clone(),
    ));

    let (work_tx, work_rx) = mpsc::channel(WORK_CHANNEL_CAPACITY);
    // The registry first: input waits until every organization registered before the start
    // is known here.
    let consumer = if !registry.enabled() || caught_up(&registry, started_at, &stop).await {
        let (stop, abandon) = (stop.clone(), abandon.clone());
        Some(
            std::thread::Builder::new()
                .name("kafka-consumer".into())
                .spawn(move || ingest.run(work_tx, stop, abandon))
                .context("starting the consumer thread")?,
        )
    } else {
        drop(work_tx);
        None
    };
    info!(
        topic = %settings.kafka.input_topic,
        group = %settings.kafka.group_id,
        organizations = settings.organizations.len(),
        "consent-webhooks running"
    );

    dispatcher.run(work_rx).await;
    // The consumer closed the channel: it is draining or done. Wait for it, off the runtime.
    if let Some(consumer) = consumer {
        tokio::task::spawn_blocking(move || consumer.join())
            .await
            .context("joining the consumer thread")?
            .map_err(|_| anyhow::anyhow!("the consumer thread panicked"))?;
    }
    follow_stop.cancel();
    tokio::task::spawn_blocking(move || follower.join())
        .await
        .ok();
    abandon.cancel();
    tasks.close();
    if tokio::time::timeout(Duration::from_secs(5), tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("some tasks did not stop within 5 s of cancellation");
    }
    let flush = producers.clone();
    tokio::task::spawn_blocking(move || flush.flush(Duration::from_secs(10)))
        .await
        .ok();
    server_stop.cancel();
    if let Some(failure) = producers.fatal_failure() {
        anyhow::bail!(
            "stopped on a fatal Kafka producer error ({}): see the log above",
            failure.code()
        );
    }
    info!("stopped");
    Ok(())
}

/// A fatal producer error fails readiness at once and starts the one shutdown path.
async fn stop_on_fatal(producers: Producers, state: Arc<IngestState>, stop: CancellationToken) {
    let fatal = producers.fatal();
    tokio::select! {
        _ = fatal.cancelled() => {}
        _ = stop.cancelled() => return,
    }
    // Draining is what readiness looks at; the consumer sets it again when it stops polling.
    state
        .draining
        .store(true, std::sync::atomic::Ordering::SeqCst);
    tracing::error!("fatal producer error: not ready; draining and stopping");
    stop.cancel();
}

/// Fails at start, naming them, when the input, dead-letter, rejected or retry topic does not
/// exist, or when the retry topic's partition count differs from the input's (a parked event
/// goes to the retry partition with its source partition's number): the service does not
/// create topics (their partitions and retention are the operator's choice), and running
/// without them would only fill the logs with retries.
async fn check_topics(producers: &Producers, settings: &Settings) -> anyhow::Result<()> {
    let kafka = &settings.kafka;
    let topics = [
        kafka.input_topic.clone(),
        kafka.dead_letter_topic.clone(),
        kafka.rejected_topic.clone(),
        kafka.retry_topic.clone(),
    ];
    // A topic created a moment ago may take a little while to appear in every broker's
    // metadata: look again for a few seconds before calling it missing.
    let deadline = tokio::time::Instant::now() + TOPIC_CHECK_PATIENCE;
    let missing = loop {
        let producers = producers.clone();
        let topics = topics.clone();
        let missing = tokio::task::spawn_blocking(move || {
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            producers.missing_topics(&names, Duration::from_secs(30))
        })
        .await
        .context("checking the topics")?
        .with_context(|| format!("cannot read the cluster's metadata from {}", kafka.brokers))?;
        if missing.is_empty() || tokio::time::Instant::now() >= deadline {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    if !missing.is_empty() {
        anyhow::bail!(
            "topic(s) {} do not exist on {}; create them first, e.g. \
             kafka-topics.sh --bootstrap-server {} --create --topic {} --partitions 6",
            missing.join(", "),
            kafka.brokers,
            kafka.brokers,
            missing[0]
        );
    }
    let (input, retry) = (kafka.input_topic.clone(), kafka.retry_topic.clone());
    let counts = {
        let producers = producers.clone();
        tokio::task::spawn_blocking(move || {
            producers.partition_counts(&[&input, &retry], Duration::from_secs(30))
        })
        .await
        .context("checking the topics")?
        .with_context(|| format!("cannot read the cluster's metadata from {}", kafka.brokers))?
    };
    if counts[0] != counts[1] {
        anyhow::bail!(
            "the retry topic {} has {} partitions and the input topic {} has {}: they must be \
             equal (a parked event goes to the retry partition with its source partition's \
             number); e.g. kafka-topics.sh --bootstrap-server {} --alter --topic {} --partitions {}",
            kafka.retry_topic,
            counts[1],
            kafka.input_topic,
            counts[0],
            kafka.brokers,
            if counts[1] < counts[0] { &kafka.retry_topic } else { &kafka.input_topic },
            counts[0].max(counts[1]),
        );
    }
    Ok(())
}

/// At scrape: the parked backlog, and the OAuth token counters (kept by each token source).
fn scrape_metrics(
    sources: Arc<dyn Fn() -> Vec<(String, Arc<TokenSource>)> + Send + Sync>,
    parking: Arc<Parking>,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
) -> Arc<dyn Fn() + Send + Sync> {
    Arc::new(move || {
        if registry.enabled() {
            let complete = registry.complete_until();
            let age = if complete == i64::MIN {
                f64::INFINITY
            } else {
                (chrono::Utc::now().timestamp_millis() - complete).max(0) as f64 / 1000.0
            };
            metrics.registry_view_age.set(age);
        }
        let (parked, oldest) = parking.backlog();
        metrics
            .parked_events
            .set(i64::try_from(parked).unwrap_or(i64::MAX));
        let age = oldest.map_or(0, |since| {
            (chrono::Utc::now().timestamp_millis() - since).max(0) / 1000
        });
        metrics.parked_oldest_age.set(age);
        for (org, source) in &sources() {
            let failures = source.failures();
            let successes = source.fetches().saturating_sub(failures);
            for (result, total) in [("success", successes), ("failure", failures)] {
                let counter = metrics
                    .oauth_token_fetches
                    .with_label_values(&[org, result]);
                counter.inc_by(total.saturating_sub(counter.get()));
            }
        }
    })
}
