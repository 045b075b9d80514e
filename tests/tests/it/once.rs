//! `prober once` as a user runs it: the real binary, real targets, exit codes.

use crate::helpers::{cli, FakeTarget};

fn write(dir: &std::path::Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn once_prints_phases_and_exits_0_when_the_probe_passes() {
    let target = FakeTarget::start().await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "p.yaml",
        &format!(
            "name: home\nevery: 30s\nhttp:\n  url: {}\n",
            target.url("/ok")
        ),
    );

    let out = cli(dir.path(), &["once", "p.yaml"], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);

    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.starts_with("PASS home"), "{stdout}");
    for phase in ["dns", "connect", "tls", "first byte", "transfer", "total"] {
        assert!(stdout.contains(phase), "missing {phase}: {stdout}");
    }
    // http:// to an IP address: no TLS and no DNS happened, so neither shows a time.
    assert!(stdout.contains("| tls - |"), "{stdout}");
    assert!(stdout.contains("dns - |"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn once_finds_a_probe_by_name_in_the_probes_directory() {
    let target = FakeTarget::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("probes")).unwrap();
    write(
        &dir.path().join("probes"),
        "two.yaml",
        &format!(
            "- name: good\n  every: 30s\n  http: {{url: \"{}\"}}\n- name: bad\n  every: 30s\n  http: {{url: \"{}\"}}\n",
            target.url("/ok"),
            target.url("/status/500")
        ),
    );

    let good = cli(dir.path(), &["once", "good"], &[]);
    let bad = cli(dir.path(), &["once", "bad", "--json"], &[]);
    let unknown = cli(dir.path(), &["once", "nope"], &[]);

    assert_eq!(good.status.code(), Some(0));
    assert_eq!(bad.status.code(), Some(1));
    let outcome: serde_json::Value = serde_json::from_slice(&bad.stdout).unwrap();
    assert_eq!(outcome["error"]["class"], "http_status");
    assert_eq!(outcome["status_code"], 500);
    // The runs API's units and names: milliseconds, `*_ms`; null for a phase that did not happen.
    let phases = &outcome["phases"];
    assert!(phases["total_ms"].as_f64().unwrap() > 0.0, "{phases}");
    assert!(phases["first_byte_ms"].as_f64().is_some(), "{phases}");
    assert!(
        phases["tls_ms"].is_null(),
        "http:// has no TLS phase: {phases}"
    );
    assert!(phases.get("total_us").is_none(), "{phases}");
    assert_eq!(unknown.status.code(), Some(2));
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        err.contains("\"nope\"") && err.contains("good, bad") || err.contains("bad, good"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn once_refuses_a_broken_file_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "p.yaml",
        "name: x\nevery: 30s\nhttp:\n  ur1: http://127.0.0.1/\n",
    );

    let out = cli(dir.path(), &["once", "p.yaml"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);

    assert_eq!(out.status.code(), Some(2));
    assert!(err.contains("p.yaml:4:3"), "{err}");
    assert!(err.contains("ur1"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn once_records_a_missing_environment_variable_as_the_daemon_does() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "p.yaml",
        "name: x\nevery: 30s\nhttp:\n  url: http://127.0.0.1:9/\n  headers:\n    X-Key: \"${env:PROBER_TEST_UNSET_VAR}\"\n",
    );

    let out = cli(dir.path(), &["once", "p.yaml"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);

    // As the daemon records it: a failed run of class `config`, naming the variable.
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("config"), "{text}");
    assert!(text.contains("PROBER_TEST_UNSET_VAR"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_header_never_appears_in_output_or_logs() {
    let target = FakeTarget::start().await;
    let dir = tempfile::tempdir().unwrap();
    // One secret from the environment, one written literally; the target echoes both back.
    write(
        dir.path(),
        "p.yaml",
        &format!(
            r#"name: secret
every: 30s
http:
  url: {}
  headers:
    Authorization: {{value: "Bearer ${{env:PROBER_TEST_TOKEN}}", secret: true}}
    X-Api-Key: {{value: literal-key-0xC0FFEE, secret: true}}
expect:
  body_contains: [this-is-not-in-the-body]
"#,
            target.url("/echo")
        ),
    );
    let env = [
        ("PROBER_TEST_TOKEN", "tok-5up3r-s3cr3t"),
        ("RUST_LOG", "trace"),
    ];

    for args in [&["once", "p.yaml"][..], &["once", "p.yaml", "--json"][..]] {
        let out = cli(dir.path(), args, &env);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);

        assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
        assert!(
            stdout.contains("<redacted>"),
            "the echoed body should be scrubbed: {stdout}"
        );
        for secret in ["tok-5up3r-s3cr3t", "literal-key-0xC0FFEE"] {
            assert!(!stdout.contains(secret), "{secret} in stdout: {stdout}");
            assert!(!stderr.contains(secret), "{secret} in logs: {stderr}");
        }
    }
}
