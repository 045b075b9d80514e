//! A run's trace id: the one its requests carry in `traceparent`, stored as
//! its run id, shown by the runs API, the recent runs and a notification
//! (with the `trace_url` link); `trace: false` and `trace: unsampled`.

use std::collections::BTreeSet;
use std::time::Duration;

use prober::config::receivers::ReceiverKind;
use prober::config::settings::Settings;
use prober::daemon::{http_executor, Daemon};
use prober::probe::Runner;
use serde_json::Value;

use crate::db::TestDb;
use crate::helpers::{http_get, probe, probes, wait_for};
use crate::notify::{receiver, FakeReceiver, Recorded};

/// `traceparent` as sent: (trace id, span id, flags); `None` when absent.
fn traceparent(r: &Recorded) -> Option<(String, String, String)> {
    let v = r.header("traceparent");
    if v.is_empty() {
        return None;
    }
    let parts: Vec<&str> = v.split('-').collect();
    assert_eq!(parts.len(), 4, "{v}");
    assert_eq!(parts[0], "00", "version 00: {v}");
    assert!(
        parts[1].len() == 32 && parts[2].len() == 16 && parts[3].len() == 2,
        "{v}"
    );
    assert!(
        v.bytes()
            .all(|b| b == b'-' || b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "lowercase hex: {v}"
    );
    assert_ne!(parts[2], "0000000000000000", "a span id is never zero: {v}");
    Some((parts[1].into(), parts[2].into(), parts[3].into()))
}

async fn json(addr: std::net::SocketAddr, path: &str) -> Value {
    let (status, body) = http_get(addr, path).await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trace_id_a_target_receives_is_the_one_stored_shown_and_notified() {
    let _shared = crate::helpers::TIMING.read().await;
    let db = TestDb::create().await;
    let target = FakeReceiver::start(503).await;
    let hook = FakeReceiver::start(200).await;
    let yaml = format!(
        "name: checkout\nevery: 1s\ntimeout: 500ms\nalert: {{failures_to_fire: 2}}\nhttp: {{url: \"{}/pay\"}}\n",
        target.url
    );
    let settings = Settings {
        database_url: db.url.clone(),
        location: "lab".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        flush_interval: Duration::from_millis(50),
        receivers: vec![receiver(
            "hook",
            ReceiverKind::Webhook,
            &format!("{}/hook", hook.url),
        )],
        trace_url: Some("https://tempo.example/trace/{trace_id}".into()),
        ..Settings::default()
    };
    let d = Daemon::start(&settings, probes(&yaml), http_executor().unwrap())
        .await
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(15), || !hook.requests().is_empty()).await,
        "the alert fires and the webhook is called"
    );

    let sent: Vec<(String, String, String)> =
        target.requests().iter().filter_map(traceparent).collect();
    assert_eq!(
        sent.len(),
        target.requests().len(),
        "every request carries traceparent"
    );
    assert!(
        sent.iter().all(|(_, _, flags)| flags == "01"),
        "sampled by default"
    );
    let sent_ids: BTreeSet<&str> = sent.iter().map(|(t, _, _)| t.as_str()).collect();
    assert_eq!(sent_ids.len(), sent.len(), "one trace per run: {sent:?}");

    // The notification: the last failed run's trace id, one the target received, and its link.
    let w = hook.requests()[0].json();
    let notified = w["last_failure"]["trace_id"].as_str().unwrap().to_string();
    assert!(
        sent_ids.contains(notified.as_str()),
        "{notified} in {sent_ids:?}"
    );
    assert_eq!(
        w["trace_url"],
        format!("https://tempo.example/trace/{notified}"),
        "{w}"
    );
    let run_id = w["last_failure"]["run_id"]
        .as_str()
        .unwrap()
        .replace('-', "");
    assert_eq!(run_id, notified, "a run's trace id is its run id");

    // The recent runs in memory and the stored runs: the same ids the target received.
    let detail = json(d.addr, "/api/v1/probes/checkout").await;
    for r in detail["recent_runs"].as_array().unwrap() {
        let t = r["trace_id"].as_str().unwrap();
        assert_eq!(t, r["run_id"].as_str().unwrap().replace('-', ""), "{r}");
        assert!(sent_ids.contains(t), "{t} was sent");
    }
    let stored_all = || async {
        let page = json(d.addr, "/api/v1/probes/checkout/runs?limit=1000").await;
        page["runs"].as_array().unwrap().clone()
    };
    let mut stored = stored_all().await;
    for _ in 0..50 {
        if stored.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        stored = stored_all().await;
    }
    assert!(stored.len() >= 2, "runs are stored: {stored:?}");
    for r in &stored {
        let t = r["trace_id"].as_str().unwrap();
        assert_eq!(t, r["run_id"].as_str().unwrap().replace('-', ""), "{r}");
        assert!(sent_ids.contains(t), "stored {t} was sent to the target");
    }
    d.shutdown().await;
}

#[tokio::test]
async fn trace_false_sends_no_traceparent_and_unsampled_clears_the_flag() {
    let target = FakeReceiver::start(200).await;
    let runner = Runner::new().unwrap();
    let off = probe(&format!(
        "name: off\nevery: 10s\ntrace: false\nhttp: {{url: \"{}/off\"}}\n",
        target.url
    ));
    let o = runner.run(&off).await;
    assert!(o.success, "{o:?}");
    assert_eq!(traceparent(&target.requests()[0]), None);
    assert_eq!(o.trace_id.len(), 32, "the run still has its trace id");

    let unsampled = probe(&format!(
        "name: un\nevery: 10s\ntrace: unsampled\nhttp: {{url: \"{}/un\"}}\n",
        target.url
    ));
    let run_id = uuid::Uuid::now_v7();
    let o = runner.run_as(&unsampled, run_id).await;
    let (trace, _, flags) = traceparent(&target.requests()[1]).unwrap();
    assert_eq!(
        (trace.as_str(), flags.as_str()),
        (o.trace_id.as_str(), "00")
    );
    assert_eq!(trace, run_id.simple().to_string());
}

#[tokio::test]
async fn a_scenario_s_steps_and_a_retried_run_s_attempts_share_the_run_s_trace() {
    let target = FakeReceiver::start(503).await;
    let runner = Runner::new().unwrap();
    let scenario = probe(&format!(
        "name: s\nevery: 10s\nsteps:\n  - name: one\n    http: {{url: \"{u}/1\"}}\n    expect: {{status: 503}}\n  - name: two\n    http: {{url: \"{u}/2\"}}\n    expect: {{status: 503}}\n",
        u = target.url
    ));
    let o = runner.run(&scenario).await;
    assert!(o.success, "{o:?}");
    let sent: Vec<_> = target.requests().iter().filter_map(traceparent).collect();
    assert_eq!(sent.len(), 2);
    assert!(sent.iter().all(|(t, _, _)| *t == o.trace_id), "{sent:?}");
    assert_ne!(sent[0].1, sent[1].1, "each request is its own span");
    let run_id = uuid::Uuid::parse_str(&o.trace_id).unwrap();
    assert_eq!(
        sent[1].1,
        format!("{:016x}", prober::run::span_id(run_id, 1, 2, 0))
    );

    let retried = probe(&format!(
        "name: r\nevery: 10s\ntimeout: 1s\nretry: {{attempts: 3, delay: 10ms, on: [http_status]}}\nhttp: {{url: \"{}/r\"}}\n",
        target.url
    ));
    let o = runner.run(&retried).await;
    assert_eq!(o.attempts.len(), 3, "{o:?}");
    let sent: Vec<_> = target.requests()[2..]
        .iter()
        .filter_map(traceparent)
        .collect();
    assert_eq!(sent.len(), 3);
    assert!(sent.iter().all(|(t, _, _)| *t == o.trace_id), "{sent:?}");
    // Each attempt's request span id is derived from the run id: the exporter names the same span.
    let run_id = uuid::Uuid::parse_str(&o.trace_id).unwrap();
    for (n, (_, span, _)) in sent.iter().enumerate() {
        let attempt = u32::try_from(n + 1).unwrap();
        assert_eq!(
            *span,
            format!("{:016x}", prober::run::span_id(run_id, attempt, 1, 0))
        );
    }
}

#[test]
fn the_probe_dashboard_links_a_failed_run_s_trace_id_to_the_trace_url_variable() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../dashboards/probe-detail.json"
    );
    let d: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let var = (d["templating"]["list"].as_array().unwrap().iter())
        .find(|v| v["name"] == "trace_url")
        .expect("a trace_url variable");
    assert_eq!(var["type"], "textbox", "{var}");
    let panel = (d["panels"].as_array().unwrap().iter())
        .find(|p| p["title"] == "Last failed runs")
        .unwrap();
    assert!(panel["targets"][0]["rawSql"]
        .as_str()
        .unwrap()
        .contains("as trace_id"));
    let link = (panel["fieldConfig"]["overrides"].as_array().unwrap().iter())
        .find(|o| o["matcher"]["options"] == "trace_id")
        .map(|o| o["properties"][0]["value"][0]["url"].clone());
    assert_eq!(link, Some(Value::from("${trace_url}${__value.raw}")));
}
