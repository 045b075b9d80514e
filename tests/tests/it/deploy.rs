//! Deployment files against the prober itself: `prober healthcheck` (the
//! container's health check) against a running daemon and against nothing; the
//! Dockerfile, the compose stack's settings and probes, and the Kubernetes
//! manifests checked against the prober's defaults and its own loader.

use std::path::{Path, PathBuf};
use std::time::Duration;

use prober::config::settings::{Settings, SettingsArgs, DEFAULT_LISTEN};
use prober::daemon::{http_executor, Daemon};
use serde_json::Value;

use crate::db::TestDb;
use crate::helpers::{cli, closed_port, http_get, probes, start_garbage, FakeTarget};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every document of a YAML file, as JSON (the prober's own YAML reader).
fn yaml(path: &str) -> Vec<Value> {
    prober::config::yaml::parse(&read(path))
        .unwrap_or_else(|e| panic!("{path}:{}:{}: {}", e.pos.line, e.pos.col, e.message))
        .into_iter()
        .map(|d| d.value)
        .collect()
}

async fn daemon(db: &TestDb, target: &FakeTarget) -> Daemon {
    let settings = Settings {
        database_url: db.url.clone(),
        listen: "127.0.0.1:0".parse().unwrap(),
        flush_interval: Duration::from_millis(50),
        shutdown_grace: Duration::from_secs(5),
        ..Settings::default()
    };
    let yaml = format!(
        "name: p\nevery: 1s\ntimeout: 900ms\nhttp: {{url: \"{}\"}}\n",
        target.url("/ok")
    );
    Daemon::start(&settings, probes(&yaml), http_executor().unwrap())
        .await
        .unwrap()
}

fn healthcheck(listen: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    cli(
        dir.path(),
        &["healthcheck", "--listen", listen, "--timeout", "2s"],
        &[],
    )
}

// === prober healthcheck ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_exits_0_when_the_daemon_answers_healthz() {
    let _shared = crate::helpers::TIMING.read().await;
    let db = TestDb::create().await;
    let target = FakeTarget::start().await;
    let d = daemon(&db, &target).await;
    let addr = d.addr.to_string();

    let out = tokio::task::spawn_blocking(move || healthcheck(&addr))
        .await
        .unwrap();

    d.shutdown().await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn healthcheck_exits_1_and_says_why_when_nothing_listens() {
    let addr = closed_port().await.to_string();

    let out = tokio::task::spawn_blocking(move || healthcheck(&addr))
        .await
        .unwrap();

    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect to 127.0.0.1:"), "{err}");
    assert!(err.contains("is `prober run` up"), "actionable: {err}");
}

#[tokio::test]
async fn healthcheck_exits_1_when_something_else_answers() {
    let garbage = start_garbage().await.to_string();
    let target = FakeTarget::start().await; // no /healthz route: 404
    let not_prober = target.addr.to_string();

    let (garbage_out, http_out) =
        tokio::task::spawn_blocking(move || (healthcheck(&garbage), healthcheck(&not_prober)))
            .await
            .unwrap();

    assert_eq!(garbage_out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&garbage_out.stderr);
    assert!(err.contains("no HTTP answer"), "{err}");
    assert_eq!(http_out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&http_out.stderr);
    assert!(err.contains("answered 404, not 200"), "{err}");
}

#[test]
fn healthcheck_reaches_a_wildcard_listen_address_on_loopback() {
    use prober::cli::healthcheck::local_addr;
    assert_eq!(
        local_addr("0.0.0.0:9680".parse().unwrap()),
        "127.0.0.1:9680".parse().unwrap()
    );
    assert_eq!(
        local_addr("[::]:9680".parse().unwrap()),
        "[::1]:9680".parse().unwrap()
    );
    assert_eq!(
        local_addr("10.1.2.3:80".parse().unwrap()),
        "10.1.2.3:80".parse().unwrap()
    );
}

// === Dockerfile and docker compose ===

#[test]
fn the_dockerfile_builds_the_tested_binary_and_runs_it_unprivileged_with_a_healthcheck() {
    let dockerfile = read("Dockerfile");
    assert!(
        dockerfile.contains("cargo build --release --locked -p prober"),
        "the image is built with the command CI builds with"
    );
    let toolchain = std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    if let Some(version) = toolchain.split_whitespace().nth(1) {
        let minor: String = version.split('.').take(2).collect::<Vec<_>>().join(".");
        assert!(
            dockerfile.contains(&format!("ARG RUST_VERSION={minor}")),
            "the builder uses the toolchain the tests run on ({minor})"
        );
    }
    let runtime = dockerfile.rsplit("\nFROM ").next().unwrap();
    assert!(
        runtime.starts_with("debian:"),
        "a slim Debian runtime stage"
    );
    assert!(runtime.contains("USER 10001:10001"), "runs as non-root");
    assert!(
        runtime.contains("install -d -o 10001 -g 10001 -m 0750 /var/lib/prober/spool")
            && runtime.contains("PROBER_SPOOL_DIR=/var/lib/prober/spool"),
        "the spool is a directory the non-root user owns"
    );
    assert!(
        runtime.contains("chromium-headless-shell")
            && runtime.contains("/var/lib/prober/screenshots")
            && runtime.contains("PROBER_SCREENSHOTS_DIR=/var/lib/prober/screenshots"),
        "browser checks have their browser and a screenshot directory the user owns"
    );
    // Every PROBER_ variable the image sets is one the binary takes: `check` reads them all.
    let vars: Vec<(&str, &str)> = (runtime.lines())
        .filter_map(|l| l.trim().trim_start_matches("ENV ").split_once('='))
        .filter(|(k, _)| k.starts_with("PROBER_"))
        .map(|(k, v)| (k, v.trim_end_matches(" \\").trim()))
        .filter(|(k, _)| *k != "PROBER_PROBES")
        .collect();
    assert!(
        vars.iter()
            .any(|(k, v)| *k == "PROBER_NO_BROWSER_SANDBOX" && *v == "true"),
        "{vars:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        "name: p\nevery: 1m\ntcp: {host: 127.0.0.1, port: 9}\n",
    )
    .unwrap();
    let out = crate::helpers::cli(dir.path(), &["check", "p.yaml"], &vars);
    assert!(
        out.status.success(),
        "the image's variables are accepted: {vars:?} {out:?}"
    );
    assert!(runtime.contains("CMD [\"prober\", \"healthcheck\""));
    let port = DEFAULT_LISTEN.rsplit(':').next().unwrap();
    assert!(runtime.contains(&format!("PROBER_LISTEN=0.0.0.0:{port}")));
    assert!(runtime.contains(&format!("EXPOSE {port}")));
    let ignore = read(".dockerignore");
    assert!(
        ignore.lines().any(|l| l == "target"),
        "no build output in the context"
    );
}

#[test]
fn the_compose_stack_s_settings_and_probes_load_and_are_mounted_where_the_prober_reads_them() {
    let compose = &yaml("docker-compose.yml")[0];
    let prober = &compose["services"]["prober"];
    let env = &prober["environment"];
    let mounts: Vec<&str> = prober["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let mounted = |host: &str| {
        mounts
            .iter()
            .find_map(|m| m.strip_prefix(&format!("{host}:")))
            .unwrap_or_else(|| panic!("{host} is mounted into the prober: {mounts:?}"))
            .trim_end_matches(":ro")
            .to_string()
    };
    // The prober runs `prober demo` with the shipped examples (which `demo.rs`
    // shows pass against the demo targets), the targets reachable from the
    // host, and the shop's port published for its fail switch.
    assert_eq!(prober["command"][0], "demo");
    assert_eq!(
        env["PROBER_PROBES"].as_str(),
        Some(mounted("./probes").as_str())
    );
    assert_eq!(env["PROBER_DEMO_BIND"], "0.0.0.0");
    let shop = format!("127.0.0.1:{0}:{0}", prober::demo::HTTP_PORT);
    assert!(
        prober["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str() == Some(shop.as_str())),
        "the demo shop's port {shop} is published: {}",
        prober["ports"]
    );
    assert_eq!(
        env["PROBER_CONFIG"].as_str(),
        Some(mounted("./deploy/compose/prober.yaml").as_str())
    );
    // Hardened: loopback-only ports, read-only root, no capabilities.
    for p in prober["ports"].as_array().unwrap() {
        assert!(
            p.as_str().unwrap().starts_with("127.0.0.1:"),
            "{p} is published on every interface"
        );
    }
    assert_eq!(prober["read_only"], true);
    assert!(
        mounts.contains(&"spool:/var/lib/prober/spool"),
        "the spool is on a volume (the root is read-only): {mounts:?}"
    );
    assert!(compose["volumes"].get("spool").is_some());
    assert_eq!(prober["cap_drop"][0], "ALL");
    // Stopped, it finishes its runs and drains its queue before compose kills it.
    let grace = prober["stop_grace_period"]
        .as_str()
        .unwrap_or("10s (compose's default)");
    assert!(
        seconds(grace) >= stop_needs().as_secs(),
        "stop_grace_period {grace} is shorter than the daemon's shutdown ({:?})",
        stop_needs()
    );

    let settings = Settings::resolve(&SettingsArgs {
        config: Some(repo().join("deploy/compose/prober.yaml")),
        ..SettingsArgs::default()
    })
    .unwrap_or_else(|e| panic!("deploy/compose/prober.yaml: {e}"));
    assert_eq!(settings.receivers.len(), 1, "Alertmanager is a receiver");
    assert!(
        settings.receivers[0]
            .endpoint()
            .starts_with("http://alertmanager:9093"),
        "the receiver is the compose stack's Alertmanager"
    );
    assert!(compose["services"]["alertmanager"].is_object());
    otel_collector_wired_to_jaeger(compose, &settings);

    let report = prober::config::load_paths(&[repo().join("probes")]);
    let errors: Vec<String> = report.errors().map(ToString::to_string).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    assert!(report.probes.len() >= 2);
    assert!(
        compose["services"].get("demo").is_none(),
        "the demo targets run in the prober (`prober demo`), not in a service of their own"
    );

    exemplars_link_to_jaeger(compose, &settings);

    let grafana = &compose["services"]["grafana"]["volumes"];
    let text = grafana.to_string();
    for f in [
        "dashboards/provisioning/datasources.yaml",
        "dashboards/provisioning/dashboards.yaml",
    ] {
        assert!(text.contains(f), "Grafana is provisioned with {f}");
    }
    let provider = &yaml("dashboards/provisioning/dashboards.yaml")[0]["providers"][0];
    assert!(
        text.contains(&format!(
            "./dashboards:{}",
            provider["options"]["path"].as_str().unwrap()
        )),
        "the dashboards are mounted where the provider reads them"
    );
}

/// Prometheus keeps the duration histograms' exemplars, and Grafana's
/// Prometheus data source links their `trace_id` to the trace in Jaeger, the
/// address `trace_url` names.
fn exemplars_link_to_jaeger(compose: &Value, settings: &Settings) {
    let services = &compose["services"];
    let command = services["prometheus"]["command"].to_string();
    assert!(
        command.contains("--enable-feature=exemplar-storage"),
        "{command}"
    );
    let sources = &yaml("dashboards/provisioning/datasources.yaml")[0]["datasources"];
    let prometheus = (sources.as_array().unwrap().iter())
        .find(|d| d["type"] == "prometheus")
        .unwrap();
    let link = &prometheus["jsonData"]["exemplarTraceIdDestinations"][0];
    assert_eq!(
        link["name"], "trace_id",
        "the exemplar label /metrics writes"
    );
    assert_eq!(link["url"], "${PROBER_TRACE_URL}$${__value.raw}");
    let prefix = services["grafana"]["environment"]["PROBER_TRACE_URL"]
        .as_str()
        .unwrap();
    let trace_url = settings.trace_url.as_deref().unwrap();
    assert_eq!(
        trace_url.replace("{trace_id}", ""),
        prefix,
        "the exemplar link opens the trace the notifications link to"
    );
}

/// The prober's runs reach Jaeger through the Collector: the prober sends to a
/// port the Collector's config listens on, the Collector exports to Jaeger's
/// OTLP port, and `trace_url` opens Jaeger's UI, published on loopback.
fn otel_collector_wired_to_jaeger(compose: &Value, settings: &Settings) {
    use prober::config::settings::OtlpProtocol;
    let services = &compose["services"];
    let collector = &services["otel-collector"];
    let mounts = collector["volumes"].to_string();
    assert!(
        mounts.contains("./deploy/compose/otel-collector.yaml:/etc/otelcol/config.yaml"),
        "{mounts}"
    );
    assert_eq!(collector["command"][0], "--config=/etc/otelcol/config.yaml");
    let config = &yaml("deploy/compose/otel-collector.yaml")[0];
    assert!(settings.otel.traces, "the compose prober exports its runs");
    assert_eq!(settings.otel.protocol, OtlpProtocol::Http);
    let endpoint = settings.otel.endpoint.as_deref().unwrap();
    let port = endpoint.rsplit(':').next().unwrap();
    assert!(endpoint.starts_with("http://otel-collector:"), "{endpoint}");
    let listens = config["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
        .as_str()
        .unwrap();
    assert_eq!(
        listens,
        format!("0.0.0.0:{port}"),
        "the Collector listens where the prober sends"
    );
    let pipeline = &config["service"]["pipelines"]["traces"];
    assert_eq!(pipeline["receivers"][0], "otlp");
    let exporter = pipeline["exporters"][0].as_str().unwrap();
    assert!(
        exporter.starts_with("otlp/"),
        "OTLP over gRPC to Jaeger: {exporter}"
    );
    let to = config["exporters"][exporter]["endpoint"].as_str().unwrap();
    assert!(to.ends_with(":4317"), "Jaeger's OTLP gRPC port: {to}");
    let host = to.split(':').next().unwrap();
    assert!(
        services[host].is_object(),
        "the Collector exports to the {host} service"
    );
    assert_eq!(
        services[host]["environment"]["COLLECTOR_OTLP_ENABLED"],
        "true"
    );
    assert!(
        services[host]["ports"]
            .to_string()
            .contains("127.0.0.1:16686:16686"),
        "Jaeger's UI is published on loopback"
    );
    assert_eq!(
        settings.trace_url.as_deref(),
        Some("http://localhost:16686/trace/{trace_id}")
    );
}

// === Kubernetes ===

/// How long a stopping daemon may take with the default settings: runs in
/// flight (`shutdown_grace`), leaving the members (`RENEW_EVERY`), then the queue's drain (`DRAIN_LIMIT`).
fn stop_needs() -> std::time::Duration {
    Settings::default().shutdown_grace
        + prober::daemon::members::RENEW_EVERY
        + prober::daemon::DRAIN_LIMIT
}

/// Whole seconds written as `45s`; anything else fails the test.
fn seconds(text: &str) -> u64 {
    text.strip_suffix('s')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{text:?} is not whole seconds like 45s"))
}

fn manifests() -> Vec<Value> {
    let dir = repo().join("deploy/kubernetes");
    let kustomization = &yaml("deploy/kubernetes/kustomization.yaml")[0];
    let mut docs = Vec::new();
    for r in kustomization["resources"].as_array().unwrap() {
        let file = format!("deploy/kubernetes/{}", r.as_str().unwrap());
        assert!(dir.join(r.as_str().unwrap()).exists(), "{file}");
        docs.extend(yaml(&file));
    }
    docs
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("a {kind} named {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_manifests_parse_and_their_ports_and_paths_are_the_prober_s() {
    let docs = manifests();
    let deployment = find(&docs, "Deployment", "prober");
    let pod = &deployment["spec"]["template"];
    let c = &pod["spec"]["containers"][0];
    let env = |name: &str| {
        c["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("env {name}"))
            .clone()
    };
    let port: i64 = DEFAULT_LISTEN.rsplit(':').next().unwrap().parse().unwrap();

    assert_eq!(c["ports"][0]["containerPort"], port);
    let grace = pod["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap_or(30);
    assert!(
        grace >= stop_needs().as_secs(),
        "terminationGracePeriodSeconds {grace} is shorter than the daemon's shutdown ({:?})",
        stop_needs()
    );
    assert_eq!(env("PROBER_LISTEN")["value"], format!("0.0.0.0:{port}"));
    let named = c["ports"][0]["name"].clone();
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], named);
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], named);
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], port.to_string());
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
    let secret = &env("DATABASE_URL")["valueFrom"]["secretKeyRef"];
    assert_eq!(
        secret["name"], "prober-database",
        "DATABASE_URL comes from a Secret"
    );
    let example = &yaml("deploy/kubernetes/secret.example.yaml")[0];
    assert!(example["stringData"][secret["key"].as_str().unwrap()].is_string());
    assert_eq!(
        pod["spec"]["securityContext"]["runAsUser"], 10001,
        "the image's user"
    );

    let service = find(&docs, "Service", "prober");
    assert_eq!(service["spec"]["ports"][0]["port"], port);
    assert_eq!(service["spec"]["ports"][0]["targetPort"], named);
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"]
    );

    // The paths answer 200 on the real daemon.
    let db = TestDb::create().await;
    let target = FakeTarget::start().await;
    let _shared = crate::helpers::TIMING.read().await;
    let d = daemon(&db, &target).await;
    // Ready (200) once results reach Postgres: 503 until the store is prepared.
    assert!(
        crate::helpers::wait_for(Duration::from_secs(15), || d.store_health.state()
            == prober::store::writer::StoreState::Ok)
        .await
    );
    for path in [
        c["livenessProbe"]["httpGet"]["path"].as_str().unwrap(),
        c["readinessProbe"]["httpGet"]["path"].as_str().unwrap(),
        annotations["prometheus.io/path"].as_str().unwrap(),
    ] {
        assert_eq!(http_get(d.addr, path).await.0, 200, "{path}");
    }
    d.shutdown().await;
}

/// Writes a ConfigMap's keys the way the kubelet mounts them: the files in a
/// hidden timestamped directory, `..data` linking to it, and each key a link through `..data`.
fn mount_like_kubelet(data: &serde_json::Map<String, Value>, dir: &Path) {
    let real = dir.join("..2026_11_26_00_00_00.000000001");
    std::fs::create_dir(&real).unwrap();
    for (key, text) in data {
        std::fs::write(real.join(key), text.as_str().unwrap()).unwrap();
    }
    std::os::unix::fs::symlink(real.file_name().unwrap(), dir.join("..data")).unwrap();
    for key in data.keys() {
        std::os::unix::fs::symlink(format!("..data/{key}"), dir.join(key)).unwrap();
    }
}

#[test]
fn kubernetes_configmap_probes_and_settings_pass_the_prober_s_own_checks() {
    let docs = manifests();
    let deployment = find(&docs, "Deployment", "prober");
    let spec = &deployment["spec"]["template"]["spec"];
    let c = &spec["containers"][0];
    let mount_of = |volume: &str| -> (String, String) {
        let m = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == volume)
            .unwrap();
        let v = spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == volume)
            .unwrap();
        (
            m["mountPath"].as_str().unwrap().to_string(),
            v["configMap"]["name"].as_str().unwrap().to_string(),
        )
    };
    let env = |name: &str| {
        c["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .and_then(|e| e["value"].as_str())
            .unwrap_or_else(|| panic!("env {name}"))
            .to_string()
    };

    let (probes_path, probes_map) = mount_of("probes");
    assert_eq!(
        env("PROBER_PROBES"),
        probes_path,
        "the prober reads the mounted ConfigMap"
    );
    let dir = tempfile::tempdir().unwrap();
    let data = find(&docs, "ConfigMap", &probes_map)["data"]
        .as_object()
        .unwrap();
    mount_like_kubelet(data, dir.path());
    let report = prober::config::load_paths(&[dir.path().to_path_buf()]);
    let errors: Vec<String> = report.errors().map(ToString::to_string).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(
        report.probes.len(),
        3,
        "each probe once (the ..data links are not read twice)"
    );

    let (settings_path, settings_map) = mount_of("settings");
    let config = env("PROBER_CONFIG");
    let key = config
        .strip_prefix(&format!("{settings_path}/"))
        .expect("PROBER_CONFIG is in the settings mount");
    let text = find(&docs, "ConfigMap", &settings_map)["data"][key]
        .as_str()
        .unwrap()
        .to_string();
    let file = dir.path().join("settings.yaml");
    std::fs::write(&file, text).unwrap();
    Settings::resolve(&SettingsArgs {
        config: Some(file),
        ..SettingsArgs::default()
    })
    .unwrap_or_else(|e| panic!("the settings ConfigMap's {key}: {e}"));
}

/// The Deployment runs hardened (non-root, read-only root, no capabilities,
/// no service-account token, memory bounded), and the example NetworkPolicy
/// selects its pods and lets in only the port the prober serves.
#[test]
fn kubernetes_deployment_is_hardened_and_the_network_policy_fits_it() {
    let docs = manifests();
    let deployment = find(&docs, "Deployment", "prober");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_ne!(pod["securityContext"]["runAsUser"], 0);
    let c = &pod["containers"][0];
    assert_eq!(
        deployment["spec"]["replicas"], 3,
        "replicas of one location share its probes"
    );
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    let spool = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/var/lib/prober/spool")
        .expect("the spool directory is a volume (the root file system is read-only)");
    assert!(
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == spool["name"] && v["emptyDir"].is_object()),
        "the spool is an emptyDir: it outlives a restart of the container"
    );
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
    assert!(c["resources"]["limits"]["memory"].is_string());

    let policy = &yaml("deploy/kubernetes/networkpolicy.example.yaml")[0];
    assert_eq!(policy["kind"], "NetworkPolicy");
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"],
        deployment["spec"]["template"]["metadata"]["labels"]
    );
    let port = &c["ports"][0]["containerPort"];
    let ingress_ports: Vec<&Value> = policy["spec"]["ingress"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["ports"].as_array().unwrap().iter().map(|p| &p["port"]))
        .collect();
    assert_eq!(ingress_ports, [port]);
    let egress_ports: Vec<i64> = policy["spec"]["egress"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["ports"].as_array().unwrap().iter())
        .filter_map(|p| p["port"].as_i64())
        .collect();
    assert!(egress_ports.contains(&5432), "Postgres reachable");
    assert!(egress_ports.contains(&53), "DNS reachable");
}
