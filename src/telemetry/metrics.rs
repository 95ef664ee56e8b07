//! Prometheus metrics, named as Prometheus's own conventions want.
//!
//! Guarantees:
//! - names carry the `consent_webhooks_` prefix and their unit (`_total`, `_seconds`);
//! - every label value comes from an enum or a code list, never from error text or URLs;
//! - the `organization` label takes only the ids of organizations that have it: those of the
//!   file unless they set `metrics_label = false`, those of the registry that set
//!   `metrics_label = true` (opt-in: thousands of registered organizations must not make
//!   thousands of series each). Every other organization is counted under `_other`; events of
//!   organizations with no endpoint are counted without the label. So its cardinality is bounded
//!   by the config and the opt-ins, never by the data;
//! - `partition` takes only the input topic's partition numbers (the retry topic has the same).

use std::sync::RwLock;

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::change::Rejection;
use crate::derive::Suppression;
use crate::webhook::EventType;
use crate::FastHashSet;

/// Every metric of the service, registered in one registry.
pub struct Metrics {
    registry: Registry,
    pub records_consumed: IntCounter,
    pub records_rejected: IntCounterVec,
    pub events_derived: IntCounterVec,
    pub events_suppressed: IntCounterVec,
    pub events_skipped: IntCounterVec,
    pub delivery_attempts: IntCounterVec,
    pub deliveries: IntCounterVec,
    pub attempt_duration: HistogramVec,
    pub end_to_end_latency: Histogram,
    pub retries_scheduled: IntCounterVec,
    pub dead_letters: IntCounterVec,
    pub in_flight_requests: IntGauge,
    pub pending_records: IntGauge,
    pub paused_partitions: IntGauge,
    pub committed_offset: IntGaugeVec,
    pub high_watermark: IntGaugeVec,
    pub consumer_lag: IntGaugeVec,
    pub oauth_token_fetches: IntCounterVec,
    pub oauth_reauthorizations: IntCounterVec,
    pub output_write_failures: IntCounterVec,
    pub endpoint_failing: IntGaugeVec,
    pub ready: IntGauge,
    pub parks: IntCounterVec,
    pub unparks: IntCounterVec,
    pub parked_events: IntGauge,
    pub parked_oldest_age: IntGauge,
    pub parked_in_memory: IntGauge,
    pub retry_lag: IntGaugeVec,
    pub registry_organizations: IntGauge,
    pub registry_applied_offset: IntGauge,
    pub registry_apply_lag: Gauge,
    pub registry_view_age: Gauge,
    pub registry_invalid_values: IntCounter,
    pub events_waiting_for_registry: IntGauge,
    /// Organizations whose series carry their id.
    labelled: RwLock<FastHashSet<String>>,
}

/// The `organization` label of every organization without its own.
pub const OTHER_ORGANIZATION: &str = "_other";

/// Attempt-latency buckets: 5 ms to the 10 s request timeout and a little beyond.
const ATTEMPT_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// End-to-end buckets: from fast deliveries to the five-minute retry budget and past it.
const E2E_BUCKETS: [f64; 14] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0,
];

pub(super) const PREFIX: &str = "consent_webhooks";

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::with_opts(Opts::new(name, help).namespace(PREFIX)).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c =
        IntCounterVec::new(Opts::new(name, help).namespace(PREFIX), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::with_opts(Opts::new(name, help).namespace(PREFIX)).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

fn float_gauge(registry: &Registry, name: &str, help: &str) -> Gauge {
    let g = Gauge::with_opts(Opts::new(name, help).namespace(PREFIX)).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g =
        IntGaugeVec::new(Opts::new(name, help).namespace(PREFIX), labels).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

impl Metrics {
    /// Registers every metric; `organizations` are the configured ids, pre-registered so that
    /// their series exist (at zero) from the start.
    pub fn new<'a>(organizations: impl IntoIterator<Item = &'a str>) -> Self {
        let r = Registry::new();
        super::process::register(&r);
        let attempt_duration = HistogramVec::new(
            HistogramOpts::new(
                "delivery_attempt_duration_seconds",
                "Duration of one HTTP delivery attempt, OAuth token fetch included.",
            )
            .namespace(PREFIX)
            .buckets(ATTEMPT_BUCKETS.to_vec()),
            &["organization"],
        )
        .expect("valid metric");
        r.register(Box::new(attempt_duration.clone()))
            .expect("unique metric");
        let end_to_end_latency = Histogram::with_opts(
            HistogramOpts::new(
                "delivery_latency_seconds",
                "From the change's occurred_at to the 2xx of its webhook.",
            )
            .namespace(PREFIX)
            .buckets(E2E_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        r.register(Box::new(end_to_end_latency.clone()))
            .expect("unique metric");

        let m = Metrics {
            records_consumed: counter(&r, "records_consumed_total", "Records taken from the input topic."),
            records_rejected: counter_vec(&r, "records_rejected_total", "Input records rejected (written to the rejected topic), by reason.", &["reason"]),
            events_derived: counter_vec(&r, "events_derived_total", "Webhook events derived, by type.", &["type"]),
            events_suppressed: counter_vec(&r, "events_suppressed_total", "Valid records that yield no webhook, by reason.", &["reason"]),
            events_skipped: counter_vec(&r, "events_skipped_total", "Derived events not delivered: no endpoint configured, or filtered out by the endpoint.", &["reason"]),
            delivery_attempts: counter_vec(&r, "delivery_attempts_total", "HTTP delivery attempts, by organization and status class (2xx..5xx, error).", &["organization", "status_class"]),
            deliveries: counter_vec(&r, "deliveries_total", "Events that reached a terminal outcome, by organization and outcome (delivered, dead_lettered).", &["organization", "outcome"]),
            attempt_duration,
            end_to_end_latency,
            retries_scheduled: counter_vec(&r, "retries_scheduled_total", "Retries scheduled after a failed attempt, by organization.", &["organization"]),
            dead_letters: counter_vec(&r, "dead_letters_total", "Events written to the dead-letter topic, by organization and reason.", &["organization", "reason"]),
            in_flight_requests: gauge(&r, "in_flight_requests", "HTTP requests in flight."),
            pending_records: gauge(&r, "pending_records", "Records taken from Kafka and not done yet (delivering, retrying, writing)."),
            paused_partitions: gauge(&r, "paused_partitions", "Input partitions paused for back-pressure."),
            committed_offset: gauge_vec(&r, "committed_offset", "Last committed offset of the group, per input partition (from librdkafka statistics).", &["partition"]),
            high_watermark: gauge_vec(&r, "high_watermark", "High watermark (end offset) of each input partition.", &["partition"]),
            consumer_lag: gauge_vec(&r, "consumer_lag", "Records between the committed offset and the high watermark, per input partition.", &["partition"]),
            oauth_token_fetches: counter_vec(&r, "oauth_token_fetches_total", "OAuth token requests, by organization and result (success, failure).", &["organization", "result"]),
            oauth_reauthorizations: counter_vec(&r, "oauth_reauthorizations_total", "Requests answered 401 with an OAuth token, then re-sent once with a new token, by organization.", &["organization"]),
            output_write_failures: counter_vec(&r, "output_write_failures_total", "Failed writes to the dead-letter or rejected topic, by topic (dead_letter, rejected) and reason.", &["topic", "reason"]),
            endpoint_failing: gauge_vec(&r, "endpoint_failing", "1 while an organization's last delivery attempt failed, 0 after a success.", &["organization"]),
            ready: gauge(&r, "ready", "1 when /readyz answers 200."),
            parks: counter_vec(&r, "parks_total", "Events parked on the retry topic (write acknowledged), by organization and reason (retry, lane_full, behind_key, revoked, shutdown).", &["organization", "reason"]),
            unparks: counter_vec(&r, "unparks_total", "Parked events read back from the retry topic for their next attempt, by organization.", &["organization"]),
            parked_events: gauge(&r, "parked_events", "Parked events not done yet, in the retry partitions this replica owns."),
            parked_oldest_age: gauge(&r, "parked_oldest_age_seconds", "Age of the oldest parked event not done yet (since it was first parked), in the retry partitions this replica owns; 0 when none."),
            parked_in_memory: gauge(&r, "parked_in_memory", "Parked events read back and held in memory (waiting for their due time, or in flight); events waiting behind their key hold none."),
            retry_lag: gauge_vec(&r, "retry_lag", "Records between the retry reader's committed position and the end of each retry partition this replica owns.", &["partition"]),
            registry_organizations: gauge(&r, "registry_organizations", "Organizations in the registry topic whose settings validate on this replica."),
            registry_applied_offset: gauge(&r, "registry_applied_offset", "Offset of the last registry record this replica applied (-1: none)."),
            registry_apply_lag: float_gauge(&r, "registry_apply_lag_seconds", "For the last registry record applied: seconds from its append to the broker to its application here."),
            registry_view_age: float_gauge(&r, "registry_view_age_seconds", "Seconds since the last moment up to which this replica's view of the registry is known complete (grows while the registry cannot be read; records of unknown organizations wait for it)."),
            registry_invalid_values: counter(&r, "registry_invalid_values_total", "Registry records whose value does not validate on this replica (the organization keeps its previous settings)."),
            events_waiting_for_registry: gauge(&r, "events_waiting_for_registry", "Events of organizations unknown here, waiting until the registry is known complete up to their record's time."),
            labelled: RwLock::new(FastHashSet::default()),
            registry: r,
        };
        m.registry_applied_offset.set(-1);
        m.preregister_common();
        m.preregister_organization(OTHER_ORGANIZATION);
        for org in organizations {
            m.label_organization(org, true);
        }
        m
    }

    /// The `organization` label value for `id`: itself when it has its own series, else
    /// [`OTHER_ORGANIZATION`].
    pub fn label<'a>(&self, id: &'a str) -> &'a str {
        if self
            .labelled
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(id)
        {
            id
        } else {
            OTHER_ORGANIZATION
        }
    }

    /// Gives `id` its own series (created at zero) or takes them away (its counts go on under
    /// [`OTHER_ORGANIZATION`]; its past series are removed from the exposition).
    pub fn label_organization(&self, id: &str, labelled: bool) {
        let mut set = self.labelled.write().unwrap_or_else(|p| p.into_inner());
        if labelled {
            if set.insert(id.to_owned()) {
                drop(set);
                self.preregister_organization(id);
            }
        } else if set.remove(id) {
            drop(set);
            self.remove_organization(id);
        }
    }

    /// Creates every bounded series at zero, so that rates and alerts see them from the start.
    fn preregister_common(&self) {
        for code in Rejection::CODES {
            self.records_rejected.with_label_values(&[code]);
        }
        for t in EventType::ALL {
            self.events_derived.with_label_values(&[t.as_str()]);
        }
        for s in Suppression::ALL {
            self.events_suppressed.with_label_values(&[s.code()]);
        }
        for reason in ["no_endpoint", "filtered"] {
            self.events_skipped.with_label_values(&[reason]);
        }
        for topic in crate::deadletter::OutputTopic::ALL {
            for failure in crate::deadletter::WriteFailure::ALL {
                self.output_write_failures
                    .with_label_values(&[topic.code(), failure.code()]);
            }
        }
    }

    fn preregister_organization(&self, org: &str) {
        {
            self.oauth_reauthorizations.with_label_values(&[org]);
            for outcome in ["delivered", "dead_lettered"] {
                self.deliveries.with_label_values(&[org, outcome]);
            }
            for class in crate::delivery::AttemptOutcome::CLASSES {
                self.delivery_attempts.with_label_values(&[org, class]);
            }
            for result in ["success", "failure"] {
                self.oauth_token_fetches.with_label_values(&[org, result]);
            }
            for reason in crate::deadletter::DeadLetterReason::ALL {
                self.dead_letters.with_label_values(&[org, reason.code()]);
            }
            self.retries_scheduled.with_label_values(&[org]);
            self.unparks.with_label_values(&[org]);
            for reason in crate::park::record::ParkReason::ALL {
                self.parks.with_label_values(&[org, reason.code()]);
            }
            self.endpoint_failing.with_label_values(&[org]).set(0);
            self.attempt_duration.with_label_values(&[org]);
        }
    }

    fn remove_organization(&self, org: &str) {
        let _ = self.oauth_reauthorizations.remove_label_values(&[org]);
        for outcome in ["delivered", "dead_lettered"] {
            let _ = self.deliveries.remove_label_values(&[org, outcome]);
        }
        for class in crate::delivery::AttemptOutcome::CLASSES {
            let _ = self.delivery_attempts.remove_label_values(&[org, class]);
        }
        for result in ["success", "failure"] {
            let _ = self.oauth_token_fetches.remove_label_values(&[org, result]);
        }
        for reason in crate::deadletter::DeadLetterReason::ALL {
            let _ = self.dead_letters.remove_label_values(&[org, reason.code()]);
        }
        let _ = self.retries_scheduled.remove_label_values(&[org]);
        let _ = self.unparks.remove_label_values(&[org]);
        for reason in crate::park::record::ParkReason::ALL {
            let _ = self.parks.remove_label_values(&[org, reason.code()]);
        }
        let _ = self.endpoint_failing.remove_label_values(&[org]);
        let _ = self.attempt_duration.remove_label_values(&[org]);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding of valid metrics");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let m = Metrics::new(["acme"]);
        m.records_consumed.inc();
        let text = m.render();
        for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
            let parts: Vec<&str> = line.split_whitespace().collect();
            let (name, kind) = (parts[2], parts[3]);
            assert!(name.starts_with("consent_webhooks_"), "{name}");
            match kind {
                "counter" => assert!(name.ends_with("_total"), "{name}"),
                "histogram" => assert!(name.ends_with("_seconds"), "{name}"),
                _ => assert!(!name.ends_with("_total"), "{name}"),
            }
        }
        assert!(text.contains("consent_webhooks_records_consumed_total 1"));
        assert!(text.contains(
            r#"consent_webhooks_deliveries_total{organization="acme",outcome="delivered"} 0"#
        ));
    }
}
