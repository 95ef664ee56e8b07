//! The deployment artifacts, checked offline with the real tools (installed by
//! `scripts/install-tools.sh` into `.tools/`; `.ci/run` runs it): the Dockerfile (hadolint), the
//! top-level docker-compose.yml (the Compose specification's JSON Schema, vendored by
//! check-jsonschema), the Kubernetes overlays (rendered by kustomize, validated by
//! kubernetes-validate against the Kubernetes OpenAPI schemas, and the KEDA and
//! Prometheus-operator objects by `crdcheck`, which decodes them strictly into those projects' Go
//! API types), and that all of them agree with one another and with the configs they mount.
//!
//! A missing tool fails the test and names the install script: nothing here skips.

#[path = "support/artifacts.rs"]
mod artifacts;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use artifacts::{
    check_config_with_secret_files, drain_timeout_secs, repo, repo_file, run_tool, tool,
    yaml_documents, yaml_file, Rendered,
};
use serde_json::Value;

// ---------------------------------------------------------------------------------- Dockerfile

#[test]
fn dockerfile_passes_hadolint() {
    run_tool(&tool("hadolint"), &["Dockerfile"], None);
}

#[test]
fn dockerfile_runtime_stage_is_small_non_root_and_checks_health() {
    let dockerfile = std::fs::read_to_string(repo_file("Dockerfile")).unwrap();
    let instructions = artifacts::dockerfile_instructions(&dockerfile);
    let last_from = instructions
        .iter()
        .rposition(|(op, _)| op == "FROM")
        .expect("a FROM");
    let runtime = &instructions[last_from..];
    let get = |op: &str| -> Vec<&str> {
        runtime
            .iter()
            .filter(|(o, _)| o == op)
            .map(|(_, args)| args.as_str())
            .collect()
    };
    assert!(
        get("FROM")[0].starts_with("scratch"),
        "runtime stage from scratch: {:?}",
        get("FROM")
    );
    let user = get("USER");
    assert!(
        user.len() == 1 && !user[0].starts_with('0') && !user[0].starts_with("root"),
        "one non-root USER: {user:?}"
    );
    let healthcheck = get("HEALTHCHECK");
    assert_eq!(healthcheck.len(), 1, "one HEALTHCHECK");
    assert!(
        healthcheck[0].contains("http://127.0.0.1:9464/healthz"),
        "HEALTHCHECK on /healthz of the default server.listen port: {}",
        healthcheck[0]
    );
    assert!(
        get("COPY").iter().all(|c| c.starts_with("--from=")),
        "the runtime stage copies only from the build stage"
    );
    assert_eq!(get("EXPOSE"), ["9464"]);
    // The build stage's COPY sources are all in the build context (.dockerignore).
    let dockerignore = std::fs::read_to_string(repo_file(".dockerignore")).unwrap();
    let allowed: Vec<&str> = dockerignore
        .lines()
        .filter_map(|l| l.trim().strip_prefix('!'))
        .map(|l| l.trim_end_matches('/'))
        .collect();
    for (_, args) in instructions[..last_from]
        .iter()
        .filter(|(op, _)| op == "COPY")
    {
        let parts: Vec<&str> = args.split_whitespace().collect();
        for source in &parts[..parts.len() - 1] {
            assert!(
                repo_file(source).exists(),
                "COPY {source}: not in the repository"
            );
            assert!(
                allowed.contains(source),
                "COPY {source}: excluded by .dockerignore (allowed: {allowed:?})"
            );
        }
    }
}

// ------------------------------------------------------------------------------ docker-compose

#[test]
fn compose_file_matches_the_compose_specification() {
    run_tool(
        &tool("check-jsonschema"),
        &[
            "--builtin-schema",
            "vendor.compose-spec",
            "docker-compose.yml",
        ],
        None,
    );
}

#[test]
fn compose_file_names_only_what_exists_and_agrees_with_its_configs() {
    let compose = yaml_file("docker-compose.yml");
    let services = compose["services"].as_object().expect("services");
    for wanted in [
        "kafka",
        "kafka-init",
        "consent-webhooks",
        "receiver",
        "prometheus",
        "grafana",
    ] {
        assert!(services.contains_key(wanted), "service {wanted}");
    }
    assert!(
        services["kafka"]["image"]
            .as_str()
            .is_some_and(|i| i.contains("apache/kafka:4.")),
        "Apache Kafka 4.x"
    );

    // Every bind mount's source exists; keep mount target → source for the checks below.
    let mut mounts: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut published = BTreeSet::new();
    for (name, service) in services {
        for volume in service["volumes"].as_array().into_iter().flatten() {
            let spec = volume.as_str().expect("short volume syntax");
            let parts: Vec<&str> = spec.split(':').collect();
            if parts[0].starts_with("./") {
                assert!(
                    repo_file(parts[0]).exists(),
                    "{name}: mounted {} does not exist",
                    parts[0]
                );
                mounts.insert((name.clone(), parts[1].to_owned()), parts[0].to_owned());
            } else {
                assert!(
                    compose["volumes"].get(parts[0]).is_some(),
                    "{name}: named volume {} not declared",
                    parts[0]
                );
            }
        }
        for dependency in service["depends_on"]
            .as_object()
            .map(|m| m.keys().cloned().collect::<Vec<_>>())
            .or_else(|| {
                service["depends_on"]
                    .as_array()
                    .map(|a| a.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
            })
            .unwrap_or_default()
        {
            assert!(
                services.contains_key(&dependency),
                "{name} depends on unknown service {dependency}"
            );
        }
        for port in service["ports"].as_array().into_iter().flatten() {
            let host = port.as_str().unwrap().split(':').next().unwrap().to_owned();
            assert!(
                published.insert(host.clone()),
                "host port {host} published twice"
            );
        }
    }
    let depends = |service: &str, on: &str, condition: &str| {
        assert_eq!(
            services[service]["depends_on"][on]["condition"], condition,
            "{service} waits for {on}: {condition}"
        );
    };
    depends("kafka-init", "kafka", "service_healthy");
    depends(
        "consent-webhooks",
        "kafka-init",
        "service_completed_successfully",
    );

    // The service: built from this repository's Dockerfile, hardened, configured by the mount.
    let service = &services["consent-webhooks"];
    let context = service["build"]["context"].as_str().unwrap();
    let dockerfile = service["build"]["dockerfile"].as_str().unwrap();
    assert!(repo_file(context).join(dockerfile).is_file(), "build file");
    assert_eq!(service["read_only"], true, "read-only root filesystem");
    assert!(
        service["user"]
            .as_str()
            .is_some_and(|u| !u.starts_with('0')),
        "non-root"
    );
    let config_source = &mounts[&(
        "consent-webhooks".to_owned(),
        "/etc/consent-webhooks/config.toml".to_owned(),
    )];
    let command: Vec<&str> = service["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        command
            .windows(2)
            .any(|w| w == ["--config", "/etc/consent-webhooks/config.toml"]),
        "run with the mounted config: {command:?}"
    );
    let config_text = std::fs::read_to_string(repo_file(config_source)).unwrap();
    let config: toml::Value = toml::from_str(&config_text).unwrap();
    let listen_port = config["server"]["listen"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    assert!(
        service["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str().unwrap().ends_with(&format!(":{listen_port}"))),
        "the service publishes its listen port {listen_port}"
    );
    // Kafka: the brokers the config names are the kafka service's advertised listener.
    let advertised = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
        .as_str()
        .unwrap();
    let brokers = config["kafka"]["brokers"].as_str().unwrap();
    assert!(
        advertised.contains(&format!("//{brokers}")),
        "brokers {brokers} among {advertised}"
    );
    let init_entrypoint = services["kafka-init"]["entrypoint"].to_string();
    assert!(
        init_entrypoint.contains(brokers),
        "kafka-init uses {brokers}"
    );
    // Organizations go to the receiver service, on the port its command listens on.
    let receiver_command = services["receiver"]["command"].to_string();
    for (org, settings) in config["organizations"].as_table().unwrap() {
        let url = settings["url"].as_str().unwrap();
        let authority = url.split('/').nth(2).unwrap();
        let (host, port) = authority.split_once(':').unwrap();
        assert!(services.contains_key(host), "{org}: no service {host}");
        assert!(
            receiver_command.contains(&format!(", {port})")),
            "{org}: the receiver listens on {port}: {receiver_command}"
        );
    }
    // Secret files the config reads are the compose secrets mounted into the service.
    let mut secret_files = BTreeMap::new();
    for secret in service["secrets"].as_array().into_iter().flatten() {
        let source = secret["source"].as_str().unwrap();
        let file = compose["secrets"][source]["file"].as_str().unwrap();
        assert!(repo_file(file).is_file(), "secret file {file}");
        secret_files.insert(
            secret["target"].as_str().unwrap().to_owned(),
            repo_file(file),
        );
    }
    check_config_with_secret_files(&config_text, &secret_files, "docker-compose");

    // Topics: every topic, with the retention and compaction the design asks for.
    let script = std::fs::read_to_string(repo_file(
        &mounts[&("kafka-init".to_owned(), "/create-topics.sh".to_owned())],
    ))
    .unwrap();
    for (topic, config) in [
        ("consent.changes", ""),
        ("consent.webhooks.dead-letter", "retention.ms=-1"),
        ("consent.changes.rejected", ""),
        ("consent.webhooks.retry", ""),
        ("consent.webhooks.organizations", "cleanup.policy=compact"),
    ] {
        let line = script
            .lines()
            .find(|l| l.starts_with(&format!("create {topic} ")))
            .unwrap_or_else(|| panic!("create-topics.sh creates {topic}"));
        assert!(line.contains(config), "{topic}: {config} in {line:?}");
    }

    // Prometheus: scrapes the service on its listen port, loads the mounted alert rules.
    let prometheus_config = &mounts[&(
        "prometheus".to_owned(),
        "/etc/prometheus/prometheus.yml".to_owned(),
    )];
    let prometheus = yaml_file(prometheus_config);
    let targets: Vec<String> = prometheus["scrape_configs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|job| {
            job["static_configs"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .flat_map(|sc| sc["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    assert!(
        targets.contains(&format!("consent-webhooks:{listen_port}")),
        "Prometheus scrapes consent-webhooks:{listen_port}: {targets:?}"
    );
    for rule_file in prometheus["rule_files"].as_array().unwrap() {
        let rule_file = rule_file.as_str().unwrap();
        let target = Path::new("/etc/prometheus").join(rule_file);
        let source = mounts
            .get(&(
                "prometheus".to_owned(),
                target.to_string_lossy().into_owned(),
            ))
            .unwrap_or_else(|| panic!("rule file {rule_file} is not mounted"));
        assert_eq!(source, "./deploy/prometheus/alerts.yml");
    }
    // promtool on the config as the container sees it (the rules next to it).
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo_file(prometheus_config),
        dir.path().join("prometheus.yml"),
    )
    .unwrap();
    std::fs::copy(
        repo_file("deploy/prometheus/alerts.yml"),
        dir.path().join("alerts.yml"),
    )
    .unwrap();
    artifacts::run(
        Path::new("promtool"),
        &["check", "config", "prometheus.yml"],
        Some(dir.path()),
        "promtool (Debian package prometheus)",
    );

    // Grafana: the datasource points at the prometheus service; the provider's folder holds
    // the mounted dashboard.
    let grafana_mount = |target: &str| -> String {
        mounts
            .get(&("grafana".to_owned(), target.to_owned()))
            .unwrap_or_else(|| panic!("grafana mounts {target}"))
            .clone()
    };
    let datasources = grafana_mount("/etc/grafana/provisioning/datasources");
    let datasource = yaml_file(&format!("{datasources}/prometheus.yml"));
    assert_eq!(
        datasource["datasources"][0]["url"], "http://prometheus:9090",
        "Grafana's datasource is the prometheus service"
    );
    assert_eq!(datasource["datasources"][0]["type"], "prometheus");
    let providers = grafana_mount("/etc/grafana/provisioning/dashboards");
    let provider = yaml_file(&format!("{providers}/consent-webhooks.yml"));
    let folder = provider["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    assert_eq!(
        grafana_mount(&format!("{folder}/consent-webhooks.json")),
        "./deploy/grafana/consent-webhooks.json"
    );
}

// ---------------------------------------------------------------------------------- Kubernetes

const OVERLAYS: [&str; 2] = ["dev", "prod"];

#[test]
fn overlays_render_and_every_object_validates() {
    for overlay in OVERLAYS {
        let rendered = Rendered::overlay(overlay);
        rendered.validate();
    }
}

#[test]
fn overlays_fit_together() {
    for overlay in OVERLAYS {
        let r = Rendered::overlay(overlay);
        let deployment = r.one("Deployment");
        let name = deployment["metadata"]["name"].as_str().unwrap();
        let namespace = deployment["metadata"]["namespace"].as_str().unwrap();
        let spec = &deployment["spec"];
        let pod = &spec["template"]["spec"];
        let container = &pod["containers"][0];
        let pod_labels = spec["template"]["metadata"]["labels"].as_object().unwrap();
        let selects_pods = |selector: &Value, what: &str| {
            for (k, v) in selector.as_object().expect(what) {
                assert_eq!(pod_labels.get(k), Some(v), "{overlay}: {what} {k}={v}");
            }
        };

        assert!(
            spec.get("replicas").is_none(),
            "{overlay}: no fixed replicas (KEDA owns the count)"
        );
        for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
            assert!(container[probe].is_object(), "{overlay}: {probe}");
        }
        assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
        let security = &container["securityContext"];
        assert_eq!(security["readOnlyRootFilesystem"], true, "{overlay}");
        assert_eq!(security["allowPrivilegeEscalation"], false, "{overlay}");
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{overlay}");
        assert!(
            container["resources"]["limits"]["memory"].is_string()
                && container["resources"]["requests"]["memory"].is_string(),
            "{overlay}: memory request and limit"
        );

        // The config: from the hashed ConfigMap, valid, its secrets in mounted Secrets.
        let config_map = r.one("ConfigMap");
        let config_map_name = config_map["metadata"]["name"].as_str().unwrap();
        let volumes = pod["volumes"].as_array().unwrap();
        let volume_of = |volume: &str| volumes.iter().find(|v| v["name"] == volume).unwrap();
        let mount_of = |path_prefix: &str| -> Option<&Value> {
            container["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| path_prefix.starts_with(m["mountPath"].as_str().unwrap()))
        };
        let config_mount = mount_of("/etc/consent-webhooks/config.toml").expect("config mount");
        let config_volume = volume_of(config_mount["name"].as_str().unwrap());
        assert_eq!(
            config_volume["configMap"]["name"], config_map_name,
            "{overlay}: the pods mount the generated (hashed) ConfigMap"
        );
        assert!(
            config_map_name.len() > "consent-webhooks-config-".len(),
            "{overlay}: hashed name {config_map_name}"
        );
        assert!(
            container["args"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a == "/etc/consent-webhooks/config.toml"),
            "{overlay}: run with the mounted config"
        );
        let config_text = config_map["data"]["config.toml"].as_str().unwrap();
        let config: toml::Value = toml::from_str(config_text).unwrap();
        let mut secret_files = BTreeMap::new();
        for path in artifacts::secret_file_references(&config) {
            let mount = mount_of(&path)
                .unwrap_or_else(|| panic!("{overlay}: secret file {path} is not on a mount"));
            let volume = volume_of(mount["name"].as_str().unwrap());
            assert!(
                volume["secret"]["secretName"].is_string(),
                "{overlay}: {path} comes from a Secret"
            );
            let dir = tempfile::tempdir().unwrap().keep();
            let file = dir.join("secret");
            std::fs::write(&file, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").unwrap();
            secret_files.insert(path, file);
        }
        check_config_with_secret_files(config_text, &secret_files, overlay);

        // Shutdown always ends before SIGKILL: drain, commit, task stop (5 s), flush (10 s).
        let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
        let drain = drain_timeout_secs(&config);
        assert!(
            grace >= drain + 5 + 5 + 10,
            "{overlay}: terminationGracePeriodSeconds {grace} below drain {drain} s + 20 s"
        );

        // Service and ServiceMonitor expose the port the config listens on.
        let listen_port: u64 = config["server"]["listen"]
            .as_str()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let container_port = &container["ports"][0];
        assert_eq!(container_port["containerPort"], listen_port, "{overlay}");
        let service = r.one("Service");
        selects_pods(&service["spec"]["selector"], "Service selector");
        assert_eq!(service["spec"]["clusterIP"], "None", "{overlay}: headless");
        assert_eq!(service["spec"]["publishNotReadyAddresses"], true);
        let service_port = &service["spec"]["ports"][0];
        assert_eq!(service_port["targetPort"], container_port["name"]);
        let monitor = r.one("ServiceMonitor");
        for (k, v) in monitor["spec"]["selector"]["matchLabels"]
            .as_object()
            .unwrap()
        {
            assert_eq!(
                service["metadata"]["labels"][k], *v,
                "{overlay}: ServiceMonitor selects the Service"
            );
        }
        assert_eq!(
            monitor["spec"]["endpoints"][0]["port"],
            service_port["name"]
        );

        // deploy/prometheus/prometheus.yml scrapes that Service's pods on that port.
        let prometheus = yaml_file("deploy/prometheus/prometheus.yml");
        let sd = &prometheus["scrape_configs"][0]["dns_sd_configs"][0];
        let fqdn = format!(
            "{}.{namespace}.svc.cluster.local",
            service["metadata"]["name"].as_str().unwrap()
        );
        assert!(
            sd["names"].as_array().unwrap().iter().any(|n| n == &fqdn),
            "{overlay}: prometheus.yml scrapes {fqdn}: {sd}"
        );
        assert_eq!(sd["port"], service_port["port"], "{overlay}");

        // PodDisruptionBudget and NetworkPolicy select the pods; egress only DNS, Kafka, HTTPS.
        selects_pods(
            &r.one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
            "PDB",
        );
        let policy = r.one("NetworkPolicy");
        selects_pods(
            &policy["spec"]["podSelector"]["matchLabels"],
            "NetworkPolicy",
        );
        let egress_ports: BTreeSet<u64> = policy["spec"]["egress"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|rule| rule["ports"].as_array().cloned().unwrap_or_default())
            .map(|p| p["port"].as_u64().unwrap())
            .collect();
        assert!(egress_ports.contains(&53) && egress_ports.contains(&443));
        for port in artifacts::broker_ports(&config) {
            assert!(
                egress_ports.contains(&port),
                "{overlay}: egress to the brokers' port {port}"
            );
        }
        assert!(
            egress_ports
                .iter()
                .all(|p| [53, 443].contains(p) || *p >= 9092),
            "{overlay}: only DNS, Kafka and HTTPS: {egress_ports:?}"
        );

        // KEDA: scales this Deployment on this group's lag of this topic, with the credentials
        // of the Secret the pods mount.
        let scaled = r.one("ScaledObject");
        assert_eq!(scaled["spec"]["scaleTargetRef"]["name"], name);
        let trigger = &scaled["spec"]["triggers"][0];
        let kafka = &config["kafka"];
        let group = kafka.get("group_id").and_then(|v| v.as_str());
        let topic = kafka.get("input_topic").and_then(|v| v.as_str());
        assert_eq!(
            trigger["metadata"]["consumerGroup"],
            group.unwrap_or("consent-webhooks")
        );
        assert_eq!(
            trigger["metadata"]["topic"],
            topic.unwrap_or("consent.changes")
        );
        assert_eq!(
            trigger["metadata"]["bootstrapServers"],
            kafka["brokers"].as_str().unwrap(),
            "{overlay}: KEDA reads the cluster the service consumes"
        );
        let auth = r.one("TriggerAuthentication");
        assert_eq!(
            trigger["authenticationRef"]["name"],
            auth["metadata"]["name"]
        );
        let kafka_secret = volume_of(
            mount_of("/var/run/secrets/kafka/").expect("kafka credentials mount")["name"]
                .as_str()
                .unwrap(),
        )["secret"]["secretName"]
            .clone();
        for reference in auth["spec"]["secretTargetRef"].as_array().unwrap() {
            assert_eq!(reference["name"], kafka_secret, "{overlay}");
        }

        // The PrometheusRule carries exactly deploy/prometheus/alerts.yml's groups.
        assert_eq!(
            r.one("PrometheusRule")["spec"],
            yaml_file("deploy/prometheus/alerts.yml"),
            "{overlay}: PrometheusRule spec = alerts.yml"
        );
    }
}

#[test]
fn prometheus_rule_is_generated_from_alerts_yml() {
    artifacts::run(
        Path::new("bash"),
        &["deploy/kubernetes/generate-prometheusrule.sh", "--check"],
        Some(&repo()),
        "bash",
    );
}

#[test]
fn every_alert_links_its_runbook_in_the_readme() {
    let alerts = yaml_file("deploy/prometheus/alerts.yml");
    let readme = std::fs::read_to_string(repo_file("README.md")).unwrap();
    let anchors = artifacts::markdown_anchors(&readme);
    for group in alerts["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let alert = rule["alert"].as_str().unwrap();
            let url = rule["annotations"]["runbook_url"]
                .as_str()
                .unwrap_or_else(|| panic!("{alert}: no runbook_url annotation"));
            let anchor = url
                .strip_prefix("README.md#")
                .unwrap_or_else(|| panic!("{alert}: runbook_url {url} is not README.md#..."));
            assert!(
                anchors.contains(anchor),
                "{alert}: README.md has no section #{anchor}"
            );
        }
    }
}

#[test]
fn yaml_helper_reads_multi_document_streams() {
    let docs = yaml_documents("a: 1\n---\nb: [x]\n");
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[1]["b"][0], "x");
}

#[test]
fn readme_managed_kafka_examples_pass_check_config() {
    let readme = std::fs::read_to_string(repo_file("README.md")).unwrap();
    let examples: Vec<&str> = readme
        .split("```toml\n")
        .skip(1)
        .filter_map(|block| block.split_once("\n```").map(|(toml, _)| toml))
        .filter(|toml| toml.contains("\"security.protocol\""))
        .collect();
    assert!(
        examples.len() >= 4,
        "README: MSK, Confluent PLAIN and OIDC, Aiven examples"
    );
    // librdkafka loads `ssl.*.location` files when check-config builds a client: a real
    // (self-signed) certificate and key stand in for the provider's.
    let pki = tempfile::tempdir().unwrap();
    let (cert, key) = (pki.path().join("cert.pem"), pki.path().join("key.pem"));
    artifacts::run(
        Path::new("openssl"),
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=test",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ],
        None,
        "openssl (Debian package openssl)",
    );
    for example in examples {
        let config: toml::Value = toml::from_str(example).unwrap();
        let mut files: BTreeMap<String, std::path::PathBuf> =
            artifacts::secret_file_references(&config)
                .into_iter()
                .map(|path| {
                    let file = tempfile::NamedTempFile::new().unwrap().into_temp_path();
                    std::fs::write(&file, "not-a-real-secret\n").unwrap();
                    (path, file.keep().unwrap())
                })
                .collect();
        let properties = config["kafka"]["properties"].as_table().unwrap();
        for (name, value) in properties {
            if name.ends_with(".location") {
                let stand_in = if name.contains("key") { &key } else { &cert };
                files.insert(value.as_str().unwrap().to_owned(), stand_in.clone());
            }
        }
        check_config_with_secret_files(example, &files, "README example");
    }
}
