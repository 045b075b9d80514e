//! Postgres over TLS: a Postgres instance of the test's own (initdb in a
//! temporary directory, on a free loopback port, run as the `postgres` system
//! user), with a certificate signed by a CA the test makes. The prober
//! migrates and writes through `sslmode=verify-full` with that CA, the
//! session is encrypted, and a wrong CA is refused with a message that names
//! the certificate. The machine's own Postgres is not touched.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sqlx::Connection;

use crate::helpers::cli;

/// The newest installed server's binaries (Debian: /usr/lib/postgresql/<major>/bin).
fn pg_bin() -> PathBuf {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("Postgres's server binaries must be installed (see .ci/run)")
        .filter_map(|e| {
            let e = e.ok()?;
            let major = e.file_name().to_str()?.parse().ok()?;
            Some((major, e.path().join("bin")))
        })
        .collect();
    dirs.sort();
    dirs.pop().expect("a Postgres major version").1
}

fn as_postgres(cmd: &Path, args: &[&str]) -> std::process::Output {
    Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(cmd)
        .args(args)
        .output()
        .unwrap()
}

fn postgres_ids() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    (id("-u"), id("-g"))
}

/// A CA and a server certificate for 127.0.0.1 and localhost that it signed, as PEM.
fn ca_and_server() -> (String, String, String) {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "prober test CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).unwrap();
    let leaf =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &ca).unwrap();
    (ca.pem(), leaf_cert.pem(), leaf_key.serialize_pem())
}

/// A running Postgres of the test's own; stopped when dropped.
struct TlsPostgres {
    dir: tempfile::TempDir,
    port: u16,
}

impl TlsPostgres {
    fn start() -> TlsPostgres {
        let dir = tempfile::Builder::new()
            .prefix("prober-pg-tls")
            .tempdir_in("/tmp")
            .unwrap();
        let (uid, gid) = postgres_ids();
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        let (ca, cert, key) = ca_and_server();
        let write = |name: &str, text: &str, mode: u32| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            std::os::unix::fs::chown(&p, Some(uid), Some(gid)).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        write("ca.pem", &ca, 0o644);
        write("server.crt", &cert, 0o644);
        write("server.key", &key, 0o600);
        let (wrong_ca, _, _) = ca_and_server();
        write("wrong-ca.pem", &wrong_ca, 0o644);

        let bin = pg_bin();
        let data = dir.path().join("data");
        let out = as_postgres(
            &bin.join("initdb"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let d = dir.path().display();
        let opts = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={d} \
             -c ssl=on -c ssl_cert_file={d}/server.crt -c ssl_key_file={d}/server.key -c fsync=off"
        );
        let log = dir.path().join("log");
        let out = as_postgres(
            &bin.join("pg_ctl"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &opts,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        TlsPostgres { dir, port }
    }

    fn url(&self, db: &str, query: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}?{query}", self.port)
    }

    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = as_postgres(
            &pg_bin().join("pg_ctl"),
            &["-D", data.to_str().unwrap(), "-m", "immediate", "stop"],
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_speaks_tls_to_postgres_and_refuses_a_wrong_ca() {
    let pg = tokio::task::spawn_blocking(TlsPostgres::start)
        .await
        .unwrap();
    let verified = pg.url(
        "prober_tls",
        &format!("sslmode=verify-full&sslrootcert={}", pg.file("ca.pem")),
    );

    // The user's path: `prober migrate` creates the database and migrates it over TLS.
    let dir = tempfile::tempdir().unwrap();
    let url = verified.clone();
    let out = tokio::task::spawn_blocking(move || {
        cli(dir.path(), &["migrate", "--database-url", &url], &[])
    })
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The session is encrypted, and the migrated tables are there.
    let mut conn = sqlx::PgConnection::connect(&verified).await.unwrap();
    let ssl: bool = sqlx::query_scalar("select ssl from pg_stat_ssl where pid = pg_backend_pid()")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(ssl, "the connection is not encrypted");
    let runs: i64 = sqlx::query_scalar("select count(*) from runs")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(runs, 0);
    conn.close().await.unwrap();

    // A CA that did not sign the server's certificate is refused, with a reason.
    let wrong = pg.url(
        "prober_tls",
        &format!(
            "sslmode=verify-full&sslrootcert={}",
            pg.file("wrong-ca.pem")
        ),
    );
    let err = prober::store::Store::create_database_if_missing(&wrong)
        .await
        .expect_err("a wrong CA must be refused");
    let msg = err.to_string();
    assert!(msg.to_lowercase().contains("certificate"), "{msg}");
    assert!(msg.contains("cannot connect"), "{msg}");
}
