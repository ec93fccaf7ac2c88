//! The operator's files agree with the code and with each other, offline: dashboards and alert
//! rules use only metric names the code exports; compose.yaml's services, files and ports, the
//! Kubernetes manifests' labels, ports, probes and security settings, and the Dockerfile's
//! user and toolchain line up; every shipped Impulse configuration validates.
//!
//! Each format's own tool (hadolint, kubernetes-validate, promtool, docker-compose) runs in
//! scripts/deploy-checks.sh; the dashboards meet a live Prometheus in dashboards_live.rs.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;

use impulse_config::{Config, TriggerConfig};
use impulse_tests::deploy::{
    alerts, dashboard_expressions, dashboards, json, metric_names, panels, read, yaml,
    ExportedMetrics,
};
use impulse_tests::python::workspace_root;
use serde_json::Value;

/// Loads (parses and validates) an Impulse configuration file of the workspace.
fn load_config(relative: &str) -> Config {
    load_config_at(&workspace_root().join(relative))
}

fn load_config_at(path: &Path) -> Config {
    impulse_config::load(path)
        .unwrap_or_else(|errors| panic!("{} does not validate:\n{errors}", path.display()))
}

/// The Kubernetes ConfigMap's impulse.toml, written to a file and loaded.
fn configmap_config() -> Config {
    let configmap = yaml("deploy/kubernetes/configmap.yaml");
    let text = configmap["data"]["impulse.toml"]
        .as_str()
        .expect("the ConfigMap holds impulse.toml");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("impulse.toml");
    std::fs::write(&path, text).expect("write");
    load_config_at(&path)
}

/// The user the Dockerfile's runtime stage runs as (`USER uid:gid`).
fn dockerfile_user() -> String {
    read("Dockerfile")
        .lines()
        .filter_map(|line| line.strip_prefix("USER "))
        .next_back()
        .expect("the Dockerfile sets USER")
        .trim()
        .to_owned()
}

fn dockerfile_uid() -> i64 {
    dockerfile_user()
        .split(':')
        .next()
        .and_then(|uid| uid.parse().ok())
        .expect("USER is numeric")
}

// === metric names ===

#[test]
fn dashboards_and_alerts_use_only_metrics_the_code_exports() {
    let exported = ExportedMetrics::from_source();
    assert!(
        exported.names.contains("impulse_invocations_total")
            && exported
                .histograms
                .contains("impulse_invocation_duration_seconds"),
        "the telemetry module's constants were not found: {exported:?}"
    );
    let mut expressions = dashboard_expressions();
    expressions.extend(impulse_tests::deploy::alert_expressions());
    let mut used = BTreeSet::new();
    let mut unknown = Vec::new();
    for expression in &expressions {
        for name in metric_names(&expression.expr) {
            if !exported.knows(&name) {
                unknown.push(format!("{}: {name}", expression.source));
            }
            used.insert(name);
        }
    }
    assert!(
        unknown.is_empty(),
        "names no Impulse code exports:\n{}",
        unknown.join("\n")
    );
    // The extraction found the names (an extractor that finds nothing would pass the above).
    for name in [
        "impulse_invocations_total",
        "impulse_invocation_duration_seconds_bucket",
        "impulse_offset_lag_records",
        "up",
    ] {
        assert!(used.contains(name), "{name} not found in {used:?}");
    }
}

// === dashboards ===

#[test]
fn dashboards_are_provisionable_and_the_function_one_filters_every_panel() {
    let mut uids = BTreeSet::new();
    for file in dashboards() {
        let dashboard = json(&file);
        let uid = dashboard["uid"].as_str().expect("a uid");
        assert!(uids.insert(uid.to_owned()), "{file}: uid {uid} used twice");
        assert!(dashboard["title"].is_string(), "{file}: no title");
        let variables = dashboard["templating"]["list"]
            .as_array()
            .expect("templating");
        assert!(
            variables
                .iter()
                .any(|v| v["name"] == "datasource" && v["type"] == "datasource"),
            "{file}: no datasource variable"
        );
        let mut ids = BTreeSet::new();
        for panel in panels(&dashboard) {
            let title = panel["title"].as_str().unwrap_or("?");
            assert!(
                ids.insert(panel["id"].as_i64().expect("a panel id")),
                "{file}: panel id of {title} used twice"
            );
            assert!(
                panel["gridPos"]["w"].is_i64(),
                "{file}: {title}: no gridPos"
            );
            if panel["type"] == "row" {
                continue;
            }
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "{file}: {title}: the panel's data source must be the variable"
            );
            let targets = panel["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{file}: {title}: no query");
            for target in targets {
                let expr = target["expr"].as_str().expect("expr");
                if uid == "impulse-function" {
                    assert!(
                        expr.contains(r#"function="$function""#),
                        "{file}: {title}: {expr} ignores $function"
                    );
                }
            }
        }
    }
    let function = json("grafana/dashboards/impulse-function.json");
    let variable = function["templating"]["list"]
        .as_array()
        .expect("templating")
        .iter()
        .find(|v| v["name"] == "function")
        .expect("a `function` variable")
        .clone();
    let query = variable["query"]["query"].as_str().expect("its query");
    assert!(
        ExportedMetrics::from_source().knows(
            query
                .trim_start_matches("label_values(")
                .split(',')
                .next()
                .unwrap_or_default()
        ),
        "the function variable lists the values of an unknown metric: {query}"
    );
}

// === alert rules ===

#[test]
fn every_alert_has_unit_tests_and_a_runbook_line() {
    let alerts = alerts();
    assert!(alerts.len() >= 8, "{alerts:?}");
    let tests = read("grafana/alerts/impulse.rules.test.yml");
    let readme = read("README.md");
    let deploy = readme
        .split("\n## Deploy")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("README.md has a `## Deploy` section");
    for (file, alert, _) in &alerts {
        assert!(
            tests.contains(&format!("- name: {alert}\n")),
            "{file}: {alert} has no test in impulse.rules.test.yml"
        );
        assert!(
            deploy.contains(&format!("`{alert}`")),
            "{file}: {alert} has no runbook line in README.md's Deploy section"
        );
    }
}

// === container image ===

#[test]
fn the_dockerfile_builds_with_the_pinned_toolchain_and_ships_a_valid_config() {
    let dockerfile = read("Dockerfile");
    let toolchain = read("rust-toolchain.toml");
    let channel = toolchain
        .lines()
        .find_map(|l| l.trim().strip_prefix("channel = "))
        .expect("a channel")
        .trim_matches('"');
    assert!(
        dockerfile.contains(&format!("ARG RUST_VERSION={channel}\n")),
        "the Dockerfile's RUST_VERSION differs from rust-toolchain.toml's {channel}"
    );
    assert!(dockerfile_uid() > 0, "USER must not be root");
    for line in [
        "STOPSIGNAL SIGTERM",
        "VOLUME [\"/var/lib/impulse\"]",
        "COPY deploy/impulse.toml /etc/impulse/impulse.toml",
        r#"ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/impulse"]"#,
    ] {
        assert!(
            dockerfile.lines().any(|l| l == line),
            "the Dockerfile lacks `{line}`"
        );
    }
    let config = load_config("deploy/impulse.toml");
    // The image's EXPOSE names the listeners of its own config.
    let expose = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("EXPOSE "))
        .expect("EXPOSE");
    for addr in [config.server.listen, config.server.admin_listen] {
        assert!(
            addr.ip().is_unspecified(),
            "{addr}: not reachable from outside the container"
        );
        assert!(expose
            .split_whitespace()
            .any(|p| p == addr.port().to_string()));
    }
    // The relative data directory lands in the volume (the working directory).
    assert!(config.queue.data_dir.is_relative());
    assert!(dockerfile.contains("WORKDIR /var/lib/impulse\n"));
}

// === compose.yaml ===

/// A service's volumes as (source, target, read-only): source is a workspace-relative path
/// for a bind mount (`./…` in the file), else a named volume.
fn mounts(service: &Value) -> Vec<(String, String, bool)> {
    service["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            let spec = v.as_str().expect("short volume syntax");
            let parts: Vec<&str> = spec.split(':').collect();
            (
                parts[0].trim_start_matches("./").to_owned(),
                parts[1].to_owned(),
                parts.get(2) == Some(&"ro"),
            )
        })
        .collect()
}

/// The workspace file behind `container_path` in `service`, through its bind mounts.
fn host_path(service: &Value, container_path: &str) -> Option<String> {
    mounts(service).into_iter().find_map(|(source, target, _)| {
        let rest = container_path.strip_prefix(&target)?;
        (rest.is_empty() || rest.starts_with('/')).then(|| format!("{source}{rest}"))
    })
}

/// The container ports a service publishes.
fn published(service: &Value) -> BTreeSet<u16> {
    service["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_str()?.rsplit(':').next()?.parse().ok())
        .collect()
}

/// `host:port` of a URL or an address (`redis://redis:6379/0`, `kafka:9092`).
fn host_port(address: &str) -> (String, u16) {
    let rest = address.split("://").last().unwrap_or(address);
    let authority = rest.split('/').next().unwrap_or(rest);
    let (host, port) = authority.rsplit_once(':').expect("host:port");
    (host.to_owned(), port.parse().expect("a port"))
}

#[test]
fn compose_services_files_and_ports_refer_to_each_other() {
    let compose = yaml("compose.yaml");
    let services = compose["services"].as_object().expect("services");
    let declared: BTreeSet<&str> = compose["volumes"]
        .as_object()
        .expect("volumes")
        .keys()
        .map(String::as_str)
        .collect();
    let mut used_volumes = BTreeSet::new();
    for (name, service) in services {
        match &service["depends_on"] {
            Value::Object(deps) => deps.keys().for_each(|d| {
                assert!(services.contains_key(d), "{name} depends on unknown {d}");
            }),
            Value::Array(deps) => deps.iter().for_each(|d| {
                let d = d.as_str().expect("a name");
                assert!(services.contains_key(d), "{name} depends on unknown {d}");
            }),
            _ => {}
        }
        let binds: BTreeSet<String> = service["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|spec| spec.starts_with("./"))
            .map(|spec| spec[2..].split(':').next().unwrap_or_default().to_owned())
            .collect();
        for (source, target, _) in mounts(service) {
            if binds.contains(&source) {
                assert!(
                    workspace_root().join(&source).exists(),
                    "{name}: bind mount source ./{source} does not exist"
                );
            } else {
                assert!(
                    declared.contains(source.as_str()),
                    "{name}: volume {source} not declared"
                );
                used_volumes.insert(source);
            }
            assert!(target.starts_with('/'), "{name}: {target}");
        }
        if let Some(build) = service.get("build") {
            let context = build["context"].as_str().expect("context");
            let dockerfile = build["dockerfile"].as_str().unwrap_or("Dockerfile");
            assert!(workspace_root().join(context).join(dockerfile).exists());
        }
    }
    assert_eq!(
        declared,
        used_volumes.iter().map(String::as_str).collect(),
        "declared volumes no service uses"
    );

    // Impulse: its config is mounted read-only at the path its command names; the ports it
    // publishes are its listeners'; it runs as the image's user.
    let impulse = &services["impulse"];
    let command: Vec<&str> = impulse["command"]
        .as_array()
        .expect("command")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let config_at = command[command
        .iter()
        .position(|a| *a == "--config")
        .expect("--config")
        + 1];
    let config_file = host_path(impulse, config_at).expect("the config is bind-mounted");
    assert!(
        mounts(impulse)
            .iter()
            .any(|(s, _, ro)| *s == config_file && *ro),
        "the config must be mounted read-only"
    );
    let config = load_config(&config_file);
    let (listen, admin) = (config.server.listen, config.server.admin_listen);
    assert_eq!(
        published(impulse),
        BTreeSet::from([listen.port(), admin.port()]),
        "impulse publishes its listeners"
    );
    assert_eq!(impulse["user"], dockerfile_user());
    assert!(host_path(impulse, "/var/lib/impulse").is_some());
    let grace = command[command
        .iter()
        .position(|a| *a == "--shutdown-grace")
        .expect("grace")
        + 1];
    let stop = impulse["stop_grace_period"]
        .as_str()
        .expect("stop_grace_period");
    assert!(
        seconds(stop) > seconds(grace),
        "stop_grace_period {stop} ≤ --shutdown-grace {grace}"
    );

    // The services Impulse's config names exist and listen where it looks.
    let mut addresses: Vec<String> = Vec::new();
    for trigger in config.triggers.values() {
        match trigger {
            TriggerConfig::Kafka(kafka) => addresses.push(kafka.bootstrap_servers.clone()),
            TriggerConfig::Redis(redis) => addresses.push(redis.url.clone()),
            _ => {}
        }
    }
    if let Some(redis) = &config.queue.redis {
        addresses.push(redis.url.clone());
    }
    assert!(
        addresses.len() >= 2,
        "the compose config uses Kafka and Redis"
    );
    for address in &addresses {
        let (host, port) = host_port(address);
        let service = services
            .get(&host)
            .unwrap_or_else(|| panic!("{address}: no service {host}"));
        if host == "kafka" {
            let advertised = service["environment"]["KAFKA_ADVERTISED_LISTENERS"]
                .as_str()
                .expect("advertised listeners");
            assert!(
                advertised.contains(&format!("//{host}:{port}")),
                "{advertised}"
            );
        } else {
            assert_eq!(port, 6379, "{address}: Redis listens on 6379");
        }
    }

    // Prometheus scrapes Impulse's admin listener as job `impulse` and loads the alert rules.
    let prometheus = &services["prometheus"];
    let prometheus_config =
        host_path(prometheus, "/etc/prometheus/prometheus.yml").expect("prometheus.yml is mounted");
    let scrape = yaml(&prometheus_config);
    let job = scrape["scrape_configs"]
        .as_array()
        .expect("scrape_configs")
        .iter()
        .find(|j| j["job_name"] == "impulse")
        .expect("job `impulse`, which the alert rules name");
    let target = job["static_configs"][0]["targets"][0]
        .as_str()
        .expect("a target");
    assert_eq!(target, format!("impulse:{}", admin.port()));
    let rules: Vec<String> = scrape["rule_files"]
        .as_array()
        .expect("rule_files")
        .iter()
        .map(|r| host_path(prometheus, r.as_str().expect("a path")).expect("rules are mounted"))
        .collect();
    assert_eq!(rules, impulse_tests::deploy::rule_files());
    assert!(published(prometheus).contains(&9090));

    // Grafana: provisioning mounted where Grafana reads it, its data source is the prometheus
    // service, its dashboard provider reads the mounted dashboards.
    let grafana = &services["grafana"];
    assert_eq!(
        host_path(grafana, "/etc/grafana/provisioning").as_deref(),
        Some("grafana/provisioning")
    );
    let datasources = yaml("grafana/provisioning/datasources/prometheus.yaml");
    let url = datasources["datasources"][0]["url"].as_str().expect("url");
    let (host, port) = host_port(url);
    assert!(services.contains_key(&host) && port == 9090, "{url}");
    let providers = yaml("grafana/provisioning/dashboards/impulse.yaml");
    let path = providers["providers"][0]["options"]["path"]
        .as_str()
        .expect("path");
    assert_eq!(
        host_path(grafana, path).as_deref(),
        Some("grafana/dashboards")
    );
    let home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
        .as_str()
        .expect("home dashboard");
    let home = host_path(grafana, home).expect("the home dashboard is mounted");
    assert!(workspace_root().join(home).exists());
}

/// Seconds of a duration like `35s` or `1m`.
fn seconds(text: &str) -> u64 {
    impulse_config::duration::parse(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .as_secs()
}

// === Kubernetes ===

#[test]
fn kubernetes_manifests_agree_with_the_image_the_config_and_each_other() {
    let kustomization = yaml("deploy/kubernetes/kustomization.yaml");
    let resources: BTreeSet<String> = kustomization["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| format!("deploy/kubernetes/{}", r.as_str().expect("a file")))
        .collect();
    let mut files: BTreeSet<String> = impulse_tests::deploy::files("deploy/kubernetes", ".yaml")
        .into_iter()
        .collect();
    files.remove("deploy/kubernetes/kustomization.yaml");
    assert_eq!(resources, files, "kustomization.yaml lists every manifest");

    let deployment = yaml("deploy/kubernetes/deployment.yaml");
    let service = yaml("deploy/kubernetes/service.yaml");
    let pdb = yaml("deploy/kubernetes/pdb.yaml");
    let monitor = yaml("deploy/kubernetes/monitoring/servicemonitor.yaml");
    let configmap = yaml("deploy/kubernetes/configmap.yaml");
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert_eq!(&deployment["spec"]["selector"]["matchLabels"], labels);
    assert_eq!(&service["spec"]["selector"], labels);
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], labels);
    assert_eq!(
        &monitor["spec"]["selector"]["matchLabels"],
        &service["metadata"]["labels"]
    );
    assert!(deployment["spec"]["replicas"].as_i64() > Some(1));

    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let ports: BTreeMap<&str, i64> = container["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().expect("named"),
                p["containerPort"].as_i64().expect("port"),
            )
        })
        .collect();
    let config = configmap_config();
    let port_of = |addr: SocketAddr| i64::from(addr.port());
    assert_eq!(ports["http"], port_of(config.server.listen));
    assert_eq!(ports["admin"], port_of(config.server.admin_listen));
    for port in service["spec"]["ports"].as_array().expect("service ports") {
        let target = port["targetPort"].as_str().expect("a named target port");
        assert!(
            ports.contains_key(target),
            "the Service targets unknown port {target}"
        );
    }
    let monitored = monitor["spec"]["endpoints"][0]["port"]
        .as_str()
        .expect("port");
    assert!(
        service["spec"]["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .any(|p| p["name"] == monitored),
        "the ServiceMonitor scrapes a port the Service does not name"
    );
    let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(
        annotations["prometheus.io/port"],
        ports["admin"].to_string()
    );
    for (probe, path) in [
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/readyz"),
    ] {
        assert_eq!(container[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(container[probe]["httpGet"]["port"], "admin", "{probe}");
    }

    // Shutdown: the kubelet waits longer than the preStop pause plus the drain.
    let args: Vec<&str> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let grace = seconds(
        args[args
            .iter()
            .position(|a| *a == "--shutdown-grace")
            .expect("grace")
            + 1],
    );
    let pause = container["lifecycle"]["preStop"]["exec"]["command"][1]
        .as_str()
        .and_then(|s| s.parse::<u64>().ok())
        .expect("a preStop sleep");
    let termination = pod["terminationGracePeriodSeconds"].as_u64().expect("set");
    assert!(
        termination > grace + pause,
        "{termination} ≤ {grace} + {pause}"
    );

    // Non-root and read-only, as the image's user.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], dockerfile_uid());
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"][0], "ALL");
    assert!(container["resources"]["requests"]["memory"].is_string());
    assert!(container["resources"]["limits"]["memory"].is_string());

    // Volumes: the ConfigMap holds the file the args name, mounted read-only; the data dir.
    let volumes: BTreeMap<&str, &Value> = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .map(|v| (v["name"].as_str().expect("named"), v))
        .collect();
    let config_arg = args[args
        .iter()
        .position(|a| *a == "--config")
        .expect("--config")
        + 1];
    let mut found_config = false;
    for mount in container["volumeMounts"].as_array().expect("mounts") {
        let name = mount["name"].as_str().expect("named");
        let volume = volumes
            .get(name)
            .unwrap_or_else(|| panic!("mount of undeclared volume {name}"));
        let at = mount["mountPath"].as_str().expect("path");
        if let Some(map) = volume["configMap"]["name"].as_str() {
            assert_eq!(map, configmap["metadata"]["name"].as_str().expect("name"));
            assert_eq!(mount["readOnly"], true);
            assert_eq!(format!("{at}/impulse.toml"), config_arg);
            found_config = true;
        }
    }
    assert!(found_config, "the config is mounted from the ConfigMap");
    assert!(container["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .any(|m| m["mountPath"] == "/var/lib/impulse"));
}
