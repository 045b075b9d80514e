//! The `icmp` kind: echo requests to 127.0.0.1 and ::1 on whichever socket
//! this machine allows (raw here: its `net.ipv4.ping_group_range` admits no
//! group), and the unprivileged datagram socket in a network namespace of
//! the test's own whose `ping_group_range` admits every group.

use prober::probe::Runner;
use prober::run::{ErrorClass, Outcome};
use serde_json::Value;

use crate::http_reach::load_errors;

/// An `icmp` probe of `host`, run once.
async fn ping(host: &str, extra: &str) -> Outcome {
    let p = crate::helpers::probe(&format!(
        "name: ping\nevery: 10s\ntimeout: 3s\nicmp:\n  host: \"{host}\"\n  count: 3\n  interval: 20ms\n  wait: 500ms\n{}",
        extra.lines().map(|l| format!("  {l}\n")).collect::<String>()
    ));
    Runner::new().unwrap().run(&p).await
}

#[tokio::test]
async fn icmp_echo_times_each_reply_on_ipv4_and_ipv6() {
    for host in ["127.0.0.1", "::1"] {
        let o = ping(host, "").await;
        if let Some(e) = o.error.as_ref().filter(|e| e.class == ErrorClass::Config) {
            assert!(
                e.message.contains("CAP_NET_RAW") && e.message.contains("ping_group_range"),
                "{}",
                e.message
            );
            eprintln!("skipped ICMP to {host}: {}", e.message);
            continue;
        }
        if host == "::1" && std::net::UdpSocket::bind("[::1]:0").is_err() {
            eprintln!("skipped ICMP to ::1: this machine has no IPv6 loopback");
            continue;
        }
        assert!(o.success, "{host}: {o:#?}");
        assert_eq!(o.info["icmp.sent"], "3", "{:?}", o.info);
        assert_eq!(o.info["icmp.received"], "3", "{:?}", o.info);
        assert_eq!(o.info["icmp.loss_percent"], "0");
        let min: f64 = o.info["icmp.rtt_min_ms"].parse().unwrap();
        let max: f64 = o.info["icmp.rtt_max_ms"].parse().unwrap();
        assert!(min <= max && max < 100.0, "{:?}", o.info);
        let avg = o.phases.first_byte_us.expect("the average round trip");
        assert!(
            o.phases.total_us >= avg && o.phases.total_us < 40_000,
            "a ping's total is its round trip, not its intervals: {:?}",
            o.phases
        );
        assert_eq!(o.phases.dns_us, None, "an address is not looked up");
        let a = o
            .assertions
            .iter()
            .find(|a| a.check == "packet loss")
            .unwrap();
        assert!(a.passed && a.actual.starts_with("0%"), "{a:?}");
    }
}

#[test]
fn an_icmp_run_that_cannot_fit_its_timeout_is_refused() {
    for (icmp, says) in [
        (
            "  count: 10\n  interval: 200ms\n",
            "longer than the timeout",
        ),
        ("  interval: 1ms\n", "must not flood"),
    ] {
        let errors = load_errors(&format!(
            "name: ping\nevery: 10s\ntimeout: 1s\nicmp:\n  host: 127.0.0.1\n{icmp}"
        ));
        assert!(errors.iter().any(|e| e.contains(says)), "{errors:#?}");
    }
}

#[test]
fn icmp_uses_the_unprivileged_datagram_socket_where_the_kernel_allows_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ping.yaml"),
        "name: ping\nevery: 10s\ntimeout: 3s\nicmp:\n  host: 127.0.0.1\n  count: 2\n  interval: 20ms\n  wait: 500ms\n",
    )
    .unwrap();
    // `prober once` in a network namespace of its own: loopback up, and a
    // ping_group_range there (only there) that admits every group.
    let script = format!(
        "ip link set lo up && sysctl -qw net.ipv4.ping_group_range='0 2147483647' && exec {} once ping.yaml --json",
        env!("CARGO_BIN_EXE_prober-cli")
    );
    let out = std::process::Command::new("unshare")
        .args(["-n", "sh", "-c", &script])
        .current_dir(dir.path())
        .output();
    let out = match out {
        Ok(o) if o.status.success() => o,
        other => {
            eprintln!(
                "skipped: no network namespace of our own here (unshare needs root): {other:?}"
            );
            return;
        }
    };
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["success"], true, "{run}");
    assert_eq!(run["info"]["icmp.socket"], "datagram", "{run}");
    assert_eq!(run["info"]["icmp.received"], "2", "{run}");
}
