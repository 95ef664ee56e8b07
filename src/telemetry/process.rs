//! Process metrics, for sizing and for the dashboard's memory panel:
//!
//! - `process_*` (Prometheus's standard process collector, Linux): resident memory, CPU seconds,
//!   open and maximum file descriptors, threads, start time; rendered by [`render`] after the
//!   service's own registry on `/metrics` (they are not the service's `consent_webhooks_`
//!   metrics, and carry no prefix);
//! - `consent_webhooks_build_info{version, librdkafka, librdkafka_features}` = 1: what runs, and
//!   which librdkafka features it was built with (zstd, SASL mechanisms, OIDC, ...);
//! - `consent_webhooks_memory_limit_bytes`: the container's memory limit from its cgroup (0 when
//!   none is set), so memory can be drawn against the pod's limit without kube-state-metrics.
//!
//! Guarantee: everything here is read once at start or from /proc at scrape time; nothing
//! touches the delivery path.

use prometheus::{Encoder, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};
use rdkafka::config::ClientConfig;

/// The `process_*` metrics of this process, in the text format (empty off Linux). Collected
/// afresh at every call, from /proc.
pub fn render() -> String {
    let registry = Registry::new();
    #[cfg(target_os = "linux")]
    registry
        .register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("unique metric");
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .expect("text encoding of valid metrics");
    String::from_utf8(out).expect("the text format is UTF-8")
}

/// Registers the build information and the memory limit in the service's `registry`.
pub fn register(registry: &Registry) {
    let info = IntGaugeVec::new(
        Opts::new(
            "build_info",
            "Always 1: the running version and the librdkafka it was built with.",
        )
        .namespace(super::metrics::PREFIX),
        &["version", "librdkafka", "librdkafka_features"],
    )
    .expect("valid metric");
    info.with_label_values(&[
        env!("CARGO_PKG_VERSION"),
        &rdkafka::util::get_rdkafka_version().1,
        &librdkafka_features(),
    ])
    .set(1);
    registry.register(Box::new(info)).expect("unique metric");

    let limit = IntGauge::with_opts(
        Opts::new(
            "memory_limit_bytes",
            "Memory limit of the process's cgroup (the container's limit); 0 when none is set.",
        )
        .namespace(super::metrics::PREFIX),
    )
    .expect("valid metric");
    limit.set(cgroup_memory_limit().unwrap_or(0));
    registry.register(Box::new(limit)).expect("unique metric");
}

/// librdkafka's `builtin.features` (e.g. `gzip,snappy,ssl,sasl,...,zstd,sasl_oauthbearer,http,oidc`).
pub fn librdkafka_features() -> String {
    ClientConfig::new()
        .create_native_config()
        .and_then(|config| config.get("builtin.features"))
        .unwrap_or_default()
}

/// The memory limit of this process's cgroup: cgroup v2 `memory.max`, else v1
/// `memory.limit_in_bytes`. `None` when unlimited or unreadable (not in a container).
fn cgroup_memory_limit() -> Option<i64> {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let raw = read("/sys/fs/cgroup/memory.max")
        .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))?;
    parse_limit(&raw)
}

/// `max`, and v1's "no limit" (a page-rounded `i64::MAX`), mean no limit.
fn parse_limit(raw: &str) -> Option<i64> {
    let value: i64 = raw.trim().parse().ok()?;
    (value > 0 && value < (1 << 60)).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_limits_parse_and_no_limit_is_none() {
        assert_eq!(parse_limit("402653184\n"), Some(402_653_184));
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("9223372036854771712\n"), None);
        assert_eq!(parse_limit("0"), None);
    }

    #[test]
    fn build_info_and_process_metrics_are_exposed() {
        let registry = Registry::new();
        register(&registry);
        let names: Vec<String> = registry
            .gather()
            .iter()
            .map(|family| family.name().to_owned())
            .collect();
        for name in [
            "consent_webhooks_build_info",
            "consent_webhooks_memory_limit_bytes",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
        }
        let process = render();
        for name in [
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
        ] {
            assert!(
                process.contains(&format!("# TYPE {name} ")),
                "{name} in {process}"
            );
        }
        let features = librdkafka_features();
        for feature in [
            "zstd",
            "sasl_scram",
            "sasl_oauthbearer",
            "oidc",
            "sasl_gssapi",
        ] {
            assert!(
                features.split(',').any(|f| f == feature),
                "librdkafka built without {feature}: {features}"
            );
        }
    }
}
