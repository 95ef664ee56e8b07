//! The follower: one thread that reads the registry topic from its start and applies each
//! record, tells how far its view is complete, and reads secret files again.
//!
//! Completeness: every 100 ms it asks the broker for the registry's end offset (at local time
//! `t`), and once it has applied everything before that offset, its view is complete up to
//! `t - clock_skew` (every record appended before `t` is in). Registry records are stamped by
//! the broker (`message.timestamp.type=LogAppendTime`), so "appended before" and "stamped
//! before" agree.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::value::{decode, from_json, to_json};
use super::{secret_digest, Apply, Entry, Registry, REGISTERED_AT_HEADER};
use crate::config::KafkaSettings;
use crate::telemetry::Metrics;

/// How often the registry's end offset is asked for.
const PROBE_EVERY: Duration = Duration::from_millis(100);

/// The follower's thread.
pub struct Follower {
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Follower {
    /// Starts following (the registry topic when enabled; secret files in any case). `apply` is
    /// called from the follower's thread for every change of what the pipeline should hold.
    pub fn start(
        registry: Arc<Registry>,
        kafka: &KafkaSettings,
        apply: Apply,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> anyhow::Result<Follower> {
        let consumer = match &registry.settings {
            None => None,
            Some(settings) => {
                let consumer: BaseConsumer = crate::kafka::client_config(kafka, &[])
                    .set("group.id", format!("{}.registry", kafka.group_id))
                    .set("enable.auto.commit", "false")
                    .set("enable.auto.offset.store", "false")
                    .set("fetch.wait.max.ms", "50")
                    .create()
                    .context("creating the registry consumer")?;
                let mut assignment = TopicPartitionList::new();
                assignment.add_partition_offset(&settings.topic, 0, Offset::Beginning)?;
                consumer
                    .assign(&assignment)
                    .context("assigning the registry topic")?;
                Some(consumer)
            }
        };
        let thread = std::thread::Builder::new()
            .name("registry".into())
            .spawn(move || follow(&registry, consumer, &apply, &metrics, &stop))
            .context("starting the registry thread")?;
        Ok(Follower {
            thread: Some(thread),
        })
    }

    /// Waits for the thread (after `stop`).
    pub fn join(mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Waits until the view is complete up to `since` (ms), logging while it is not; `false` when
/// `stop` came first.
pub async fn caught_up(registry: &Registry, since: i64, stop: &CancellationToken) -> bool {
    let mut complete = registry.watch_complete();
    let started = Instant::now();
    let mut next_log = Duration::from_secs(10);
    loop {
        if *complete.borrow_and_update() >= since {
            info!(
                organizations = registry.valid_entries(),
                offset = registry.applied_offset(),
                took_ms = started.elapsed().as_millis() as u64,
                "organization registry read to its end"
            );
            return true;
        }
        tokio::select! {
            _ = stop.cancelled() => return false,
            _ = complete.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                if started.elapsed() >= next_log {
                    warn!(offset = registry.applied_offset(), "still reading the organization registry; input waits for it");
                    next_log += Duration::from_secs(10);
                }
            }
        }
    }
}

fn follow(
    registry: &Registry,
    consumer: Option<BaseConsumer>,
    apply: &Apply,
    metrics: &Metrics,
    stop: &CancellationToken,
) {
    let refresh_every = registry
        .settings
        .as_ref()
        .map_or(Duration::from_secs(2), |s| s.secret_refresh);
    let mut next_refresh = Instant::now() + refresh_every;
    let mut probe: Option<(i64, i64)> = None;
    let mut last_probe: Option<Instant> = None;
    let mut next_offset = 0;
    while !stop.is_cancelled() {
        match (&consumer, &registry.settings) {
            (Some(consumer), Some(settings)) => {
                if probe.is_none() && last_probe.is_none_or(|at| at.elapsed() >= PROBE_EVERY) {
                    let asked_at = now_ms();
                    match consumer.fetch_watermarks(&settings.topic, 0, Duration::from_secs(5)) {
                        Ok((_, high)) => probe = Some((asked_at, high)),
                        Err(e) => warn!(error = %e, "cannot read the registry's end offset"),
                    }
                    last_probe = Some(Instant::now());
                }
                if let Some((asked_at, high)) = probe {
                    if next_offset >= high {
                        let complete = asked_at - settings.clock_skew.as_millis() as i64;
                        registry.complete.send_if_modified(|c| {
                            let later = complete > *c;
                            *c = (*c).max(complete);
                            later
                        });
                        probe = None;
                    }
                }
                let wait = if probe.is_some() { 10 } else { 50 };
                match consumer.poll(Duration::from_millis(wait)) {
                    Some(Ok(message)) => {
                        next_offset = message.offset() + 1;
                        apply_record(registry, &message, apply, metrics);
                    }
                    Some(Err(e)) => warn!(error = %e, "reading the registry topic"),
                    None => {}
                }
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
        if Instant::now() >= next_refresh {
            refresh_secrets(registry, apply);
            next_refresh = Instant::now() + refresh_every;
        }
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// One registry record: an organization put or removed.
fn apply_record(
    registry: &Registry,
    message: &rdkafka::message::BorrowedMessage<'_>,
    apply: &Apply,
    metrics: &Metrics,
) {
    let offset = message.offset();
    let stamped = message.timestamp().to_millis().unwrap_or_else(now_ms);
    let Some(id) = message.key().and_then(|k| std::str::from_utf8(k).ok()) else {
        warn!(
            offset,
            "registry record without a UTF-8 key (an organization id): ignored"
        );
        metrics.registry_invalid_values.inc();
        return;
    };
    match message.payload() {
        None => {
            registry.write().remove(id);
            info!(organization_id = id, offset, "organization removed");
        }
        Some(bytes) => {
            let header = message.headers().and_then(|headers| {
                headers
                    .iter()
                    .find(|h| h.key == REGISTERED_AT_HEADER)
                    .and_then(|h| std::str::from_utf8(h.value?).ok()?.parse::<i64>().ok())
            });
            let previous = registry.get(id);
            // Ours always carry the header on an update; another writer's update keeps the
            // registration time this replica knows.
            let registered_at = header
                .or(previous.as_ref().map(|p| p.registered_at))
                .unwrap_or(stamped);
            let checked = decode(bytes)
                .map_err(|e| format!("organizations.{id}: {e}"))
                .map(|toml| {
                    let settings = registry.validate(id, &toml).map_err(|e| e.to_string());
                    (to_json(&toml), mentions_file(&toml), settings)
                });
            let entry = match checked {
                Ok((value, reads_files, Ok(settings))) => Entry {
                    value,
                    settings: Some(Arc::new(settings)),
                    registered_at,
                    offset,
                    error: None,
                    reads_files,
                },
                Ok((_, _, Err(message))) | Err(message) => {
                    error!(organization_id = id, offset, error = %message, "registry value does not validate here: the organization keeps its previous settings, if any");
                    metrics.registry_invalid_values.inc();
                    let previous = previous.filter(|p| p.settings.is_some());
                    Entry {
                        value: previous
                            .as_ref()
                            .map_or(serde_json::Value::Null, |p| p.value.clone()),
                        reads_files: previous.as_ref().is_some_and(|p| p.reads_files),
                        settings: previous.and_then(|p| p.settings),
                        registered_at,
                        offset,
                        error: Some(message),
                    }
                }
            };
            debug!(
                organization_id = id,
                offset, registered_at, "organization registered"
            );
            registry.write().insert(id.to_owned(), entry);
        }
    }
    apply(id, registry.live(id));
    registry.applied.send_replace(offset);
    metrics.registry_applied_offset.set(offset);
    metrics
        .registry_apply_lag
        .set((now_ms() - stamped).max(0) as f64 / 1000.0);
    metrics
        .registry_organizations
        .set(i64::try_from(registry.valid_entries()).unwrap_or(i64::MAX));
}

/// Reads every organization's secret references again; applies those whose secrets changed.
fn refresh_secrets(registry: &Registry, apply: &Apply) {
    let mut changed = Vec::new();
    for (id, file) in &registry.file {
        if let Some(fresh) = reread(registry, id, &file.source, &file.settings()) {
            *file.settings.write().unwrap_or_else(|p| p.into_inner()) = fresh;
            // A registry entry of the same id wins: the pipeline holds that one.
            if !registry.read().contains_key(id) {
                changed.push(id.clone());
                apply(id, registry.live(id));
            }
        }
    }
    let entries: Vec<(String, Entry)> = registry
        .read()
        .iter()
        // Only those naming a secret file: the others have nothing to read again.
        .filter(|(_, e)| e.settings.is_some() && e.reads_files)
        .map(|(id, e)| (id.clone(), e.clone()))
        .collect();
    for (id, entry) in entries {
        let (Ok(source), Some(settings)) = (from_json(&entry.value), &entry.settings) else {
            continue;
        };
        if let Some(fresh) = reread(registry, &id, &source, settings) {
            if let Some(e) = registry.write().get_mut(&id) {
                if e.offset == entry.offset {
                    e.settings = Some(fresh);
                }
            }
            changed.push(id.clone());
            apply(&id, registry.live(&id));
        }
    }
    for id in changed {
        info!(organization_id = %id, "a secret of the organization changed: applied from its next attempt");
    }
}

/// The settings read again, when a secret differs from `current`'s.
fn reread(
    registry: &Registry,
    id: &str,
    source: &toml::Value,
    current: &crate::config::OrganizationSettings,
) -> Option<Arc<crate::config::OrganizationSettings>> {
    if !mentions_file(source) {
        return None;
    }
    match registry.validate(id, source) {
        Ok(fresh) if secret_digest(&fresh) != secret_digest(current) => Some(Arc::new(fresh)),
        Ok(_) => None,
        Err(e) => {
            warn!(organization_id = id, error = %e, "a secret file cannot be read now: the organization keeps the secrets it has");
            None
        }
    }
}

/// Whether a value references a secret file anywhere.
fn mentions_file(value: &toml::Value) -> bool {
    match value {
        toml::Value::Table(t) => t.iter().any(|(k, v)| k == "file" || mentions_file(v)),
        toml::Value::Array(items) => items.iter().any(mentions_file),
        _ => false,
    }
}

/// Fails at start when the registry topic is missing, has more than one partition (changes
/// must keep one order), or is not compacted (a deleting topic would lose organizations after
/// its retention); warns when its records are stamped by their producers rather than by the
/// broker.
pub async fn check_topic(kafka: &KafkaSettings, topic: &str) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = crate::kafka::client_config(kafka, &[])
        .create()
        .context("creating the Kafka admin client")?;
    let create = format!(
        "kafka-topics.sh --bootstrap-server {} --create --topic {topic} --partitions 1 \
         --config cleanup.policy=compact --config message.timestamp.type=LogAppendTime",
        kafka.brokers
    );
    // A topic created a moment ago may take a little while to show in the metadata.
    let deadline = Instant::now() + Duration::from_secs(15);
    let partitions = loop {
        let metadata = admin
            .inner()
            .fetch_metadata(None, Duration::from_secs(30))
            .context("reading the registry topic's metadata")?;
        let partitions = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map_or(0, |t| t.partitions().len());
        if partitions > 0 || Instant::now() >= deadline {
            break partitions;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    if partitions == 0 {
        anyhow::bail!("the organization registry topic {topic} does not exist; create it first, e.g. {create}");
    }
    if partitions != 1 {
        anyhow::bail!("the organization registry topic {topic} has {partitions} partitions; it needs exactly 1 (one order of changes), e.g. {create}");
    }
    let described = admin
        .describe_configs(
            [&ResourceSpecifier::Topic(topic)],
            &AdminOptions::new().request_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .context("reading the registry topic's configuration")?;
    let config = described
        .into_iter()
        .next()
        .context("no configuration for the registry topic")?
        .context("reading the registry topic's configuration")?;
    let get = |name: &str| {
        config
            .get(name)
            .and_then(|e| e.value.clone())
            .unwrap_or_default()
    };
    if !get("cleanup.policy")
        .split(',')
        .any(|p| p.trim() == "compact")
    {
        anyhow::bail!(
            "the organization registry topic {topic} is not compacted (cleanup.policy={}): it \
             would lose organizations after its retention; e.g. kafka-configs.sh \
             --bootstrap-server {} --alter --entity-type topics --entity-name {topic} \
             --add-config cleanup.policy=compact",
            get("cleanup.policy"),
            kafka.brokers
        );
    }
    if get("message.timestamp.type") != "LogAppendTime" {
        warn!(
            topic,
            "the organization registry topic's records are stamped by their producers \
             (message.timestamp.type=CreateTime): with clocks apart, replicas may decide \
             differently about records near a registration; set LogAppendTime"
        );
    }
    Ok(())
}
