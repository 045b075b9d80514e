//! Every command README.md and probes/README.md show a user is run here, in
//! the order the documents give them, from the repository's root, as typed:
//! `cargo run [--release] -- ARGS` and `prober ARGS` run the prober's CLI with
//! ARGS (the `--release` build itself is run verbatim by `.ci/run`), `curl`
//! runs curl. A daemon (`run`, `demo`) is left running for the commands after
//! it, on its default ports, against a fresh database, and must stop cleanly
//! on SIGINT when its document is done. A ```text block that starts with
//! `$ ` lines runs them and compares the last one's output with the rest of
//! the block, digits and hexadecimal ids aside. A command this test does not
//! know fails it: a document cannot show a command that nothing runs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::db::TestDb;

/// Commands that cannot run inside the tests, and where they are covered.
const NOT_RUN_HERE: &[(&str, &str)] = &[
    ("cargo test --workspace", "the command running this test"),
    (
        "docker compose up --build",
        "no Docker engine here: docker_context.rs builds the image's context, .ci/run checks the compose file",
    ),
    (
        "docker-compose up --build",
        "no Docker engine here: docker_context.rs builds the image's context, .ci/run checks the compose file",
    ),
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// A block of a document: its language and its lines.
struct Block {
    lang: String,
    lines: Vec<String>,
    line: usize,
}

fn blocks(md: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut cur: Option<Block> = None;
    for (i, l) in md.lines().enumerate() {
        if let Some(rest) = l.strip_prefix("```") {
            match cur.take() {
                Some(b) => out.push(b),
                None => {
                    cur = Some(Block {
                        lang: rest.trim().to_string(),
                        lines: Vec::new(),
                        line: i + 1,
                    })
                }
            }
        } else if let Some(b) = cur.as_mut() {
            b.lines.push(l.to_string());
        }
    }
    out
}

/// A shell line without its trailing comment.
fn command(line: &str) -> String {
    let line = match line.find(" #") {
        Some(i) => &line[..i],
        None => line,
    };
    line.trim().to_string()
}

/// The prober's arguments of `cargo run [--release] -- ARGS` or `prober ARGS`.
fn prober_args(cmd: &str) -> Option<String> {
    for prefix in ["cargo run --release -- ", "cargo run -- ", "prober "] {
        if let Some(args) = cmd.strip_prefix(prefix) {
            return Some(args.to_string());
        }
    }
    None
}

fn shell(cmd: &str, db: &TestDb) -> Command {
    let mut c = Command::new("bash");
    c.arg("-c")
        .arg(cmd)
        .current_dir(repo())
        .env("DATABASE_URL", &db.url)
        .env("NO_COLOR", "1")
        .env_remove("PROBER_PROBES")
        .env_remove("PROBER_LISTEN");
    c
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_prober-cli")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Digits and hexadecimal ids replaced, so a measured sample compares by its shape.
fn shape(s: &str) -> String {
    let hex = regex::Regex::new(r"\b[0-9a-f]{12,}\b").unwrap();
    let num = regex::Regex::new(r"\d+(\.\d+)?").unwrap();
    let s = hex.replace_all(s, "H");
    num.replace_all(&s, "N").trim_end().to_string()
}

async fn port_open(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}

/// The daemons a document started; each must stop cleanly on SIGINT.
struct Daemons(Vec<(String, Child)>);

impl Daemons {
    fn stop(&mut self) {
        for (cmd, mut child) in self.0.drain(..) {
            let pid = child.id().to_string();
            let _ = Command::new("kill").args(["-INT", &pid]).status();
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            let status = loop {
                if let Some(s) = child.try_wait().unwrap() {
                    break Some(s);
                }
                if std::time::Instant::now() > deadline {
                    let _ = child.kill();
                    break None;
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            assert_eq!(
                status.and_then(|s| s.code()),
                Some(0),
                "`{cmd}` did not stop cleanly on SIGINT:\n{err}"
            );
        }
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
        }
    }
}

/// Runs one document's commands in order; returns how many ran.
async fn run_document(doc: &str, db: &TestDb) -> usize {
    let md = std::fs::read_to_string(repo().join(doc)).unwrap();
    let mut daemons = Daemons(Vec::new());
    let mut ran = 0;
    for b in blocks(&md) {
        match b.lang.as_str() {
            "sh" => {
                for (i, l) in b.lines.iter().enumerate() {
                    let cmd = command(l);
                    if cmd.is_empty() {
                        continue;
                    }
                    let at = format!("{doc}:{}", b.line + 1 + i);
                    run_command(&cmd, &at, false, db, &mut daemons).await;
                    ran += 1;
                }
            }
            "text" if b.lines.first().is_some_and(|l| l.starts_with("$ ")) => {
                let mut out = None;
                let mut expected = Vec::new();
                for (i, l) in b.lines.iter().enumerate() {
                    if let Some(cmd) = l.strip_prefix("$ ") {
                        let at = format!("{doc}:{}", b.line + 1 + i);
                        out = run_command(cmd, &at, true, db, &mut daemons).await;
                        ran += 1;
                    } else {
                        expected.push(l.as_str());
                    }
                }
                let out = out.unwrap_or_else(|| panic!("{doc}:{}: no output to compare", b.line));
                let got = String::from_utf8_lossy(&out.stdout).to_string();
                assert_eq!(
                    shape(&got),
                    shape(&expected.join("\n")),
                    "{doc}:{}: the sample output differs from what the command prints now:\n{got}",
                    b.line
                );
            }
            _ => {}
        }
    }
    daemons.stop();
    ran
}

/// Runs one command; a finished command's output is returned.
async fn run_command(
    cmd: &str,
    at: &str,
    sample: bool,
    db: &TestDb,
    daemons: &mut Daemons,
) -> Option<Output> {
    if let Some((_, why)) = NOT_RUN_HERE.iter().find(|(c, _)| *c == cmd) {
        eprintln!("{at}: `{cmd}` not run here: {why}");
        return None;
    }
    if let Some(args) = prober_args(cmd) {
        let sub = args.split_whitespace().next().unwrap_or_default();
        let line = format!("exec {} {args}", bin());
        if sub == "run" || sub == "demo" {
            let targets_only = args.contains("--targets-only");
            let child = shell(&line, db)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            daemons.0.push((cmd.to_string(), child));
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            loop {
                let up = if targets_only {
                    port_open(prober::demo::HTTP_PORT).await
                } else {
                    port_open(9680).await
                        && crate::helpers::http_get("127.0.0.1:9680".parse().unwrap(), "/readyz")
                            .await
                            .1
                            .contains("\"status\":\"ready\"")
                };
                if up {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{at}: `{cmd}` did not become ready within 60 s"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            return None;
        }
        let out = tokio::task::spawn_blocking({
            let mut c = shell(&line, db);
            move || c.output().unwrap()
        })
        .await
        .unwrap();
        // A sample block compares the output instead (a sample may show a failure).
        assert!(
            sample || out.status.success(),
            "{at}: `{cmd}` failed:\n{}",
            text(&out)
        );
        return Some(out);
    }
    if cmd.starts_with("curl ") {
        let line = format!("{cmd} -sS --max-time 10 -o /dev/null -w '%{{http_code}}'");
        let out = shell(&line, db).output().unwrap();
        let code = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success() && code.starts_with('2'),
            "{at}: `{cmd}` answered {code}:\n{}",
            text(&out)
        );
        return Some(out);
    }
    panic!(
        "{at}: `{cmd}` is shown to users but no test runs it: teach tests/tests/it/docs.rs to run it (or list it in NOT_RUN_HERE with where it is covered)"
    );
}

/// Every command of README.md and probes/README.md runs as documented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_the_readmes_show_runs_as_documented() {
    // The demo's fixed ports and the default listen address are this test's.
    let _ports = crate::demo::DEMO_PORTS.lock().await;
    let _shared = crate::helpers::TIMING.read().await;
    for doc in ["README.md", "probes/README.md"] {
        let db = TestDb::create().await;
        let ran = run_document(doc, &db).await;
        assert!(ran >= 3, "{doc}: only {ran} commands found");
    }
}

#[test]
fn a_sample_compares_by_shape_not_by_measured_numbers() {
    assert_eq!(
        shape("PASS x  in 13.8 ms\n  trace d41507e5a93174143f29d78a98e9eb51"),
        shape("PASS x  in 7.2 ms\n  trace 0123456789abcdef0123456789abcdef")
    );
    assert_ne!(shape("PASS x"), shape("FAIL x"));
    assert!(Path::new(bin()).exists());
}
