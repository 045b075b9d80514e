//! The settings' `proxy`: every HTTP probe that names no proxy goes through
//! it, `proxy: direct` opts a probe out, and `prober once` takes it from the
//! same `prober.yaml` as the daemon.

use prober::config::probe::Proxy;
use prober::probe::Runner;

use crate::helpers::{cli, http_probe};
use crate::http_reach::{proxy, serve, Speaks};

#[tokio::test]
async fn the_settings_proxy_carries_probes_without_their_own_and_direct_opts_out() {
    let target = serve("127.0.0.1:0", Speaks::Both, None).await;
    let (http_proxy, asked) = proxy(false).await;
    let url = format!("http://localhost:{}/", target.port());
    let runner = Runner::new().unwrap().with_default_proxy(Some(
        Proxy::parse(&format!("http://{http_proxy}"), "").unwrap(),
    ));

    let via = runner.run(&http_probe(&url, "", "")).await;
    let direct = runner.run(&http_probe(&url, "proxy: direct", "")).await;

    assert!(via.success && direct.success, "{via:#?} {direct:#?}");
    assert_eq!(
        via.info.get("proxy"),
        Some(&format!("http://{http_proxy}/"))
    );
    assert!(!direct.info.contains_key("proxy"), "{direct:#?}");
    assert_eq!(
        *asked.lock().unwrap(),
        [format!("localhost:{}", target.port())],
        "only the first"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_takes_the_proxy_from_the_settings_file() {
    let target = serve("127.0.0.1:0", Speaks::Both, None).await;
    let (socks, asked) = proxy(true).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        format!(
            "name: p\nevery: 1m\nhttp: {{url: \"http://localhost:{}/\"}}\n",
            target.port()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("prober.yaml"),
        format!("proxy: socks5h://{socks}\n"),
    )
    .unwrap();

    let d = dir.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || cli(&d, &["once", "p.yaml", "--json"], &[]))
        .await
        .unwrap();

    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        *asked.lock().unwrap(),
        [format!("localhost:{}", target.port())]
    );

    // A broken settings file stops `once` as it stops `run`, at its line.
    std::fs::write(dir.path().join("prober.yaml"), "proxy: ftp://x\n").unwrap();
    let d = dir.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || cli(&d, &["once", "p.yaml"], &[]))
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("prober.yaml:1:") && err.contains("proxy") && err.contains("not a proxy URL"),
        "{err}"
    );
}
