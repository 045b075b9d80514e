//! A fresh Postgres database per test, on the machine's server.

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

/// Where the tests find Postgres (override with PROBER_TEST_PG).
pub fn server_url() -> String {
    std::env::var("PROBER_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A database created for one test; dropped (best effort) when the value is dropped.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn create() -> TestDb {
        let name = format!("prober_test_{}", uuid::Uuid::now_v7().simple());
        let mut admin = sqlx::PgConnection::connect(&format!("{}/postgres", server_url()))
            .await
            .expect("Postgres must run on 127.0.0.1:5432 for the tests (see .ci/run)");
        sqlx::query(&format!("create database {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        TestDb {
            url: format!("{}/{name}", server_url()),
            name,
        }
    }

    /// A URL to the same database through another host:port (a proxy).
    pub fn url_via(&self, addr: std::net::SocketAddr) -> String {
        format!("postgres://postgres@{addr}/{}", self.name)
    }

    /// Runs stored, and distinct run ids among them.
    pub async fn count_runs(&self) -> (i64, i64) {
        let pool = self.pool().await;
        sqlx::query_as("select count(*), count(distinct run_id) from runs")
            .fetch_one(&pool)
            .await
            .unwrap()
    }

    pub async fn pool(&self) -> sqlx::PgPool {
        let opts: PgConnectOptions = self.url.parse().unwrap();
        sqlx::PgPool::connect_with(
            opts.options([("timezone", "UTC")])
                .disable_statement_logging(),
        )
        .await
        .unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Best effort, on a thread of its own: Drop cannot await.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut admin = sqlx::PgConnection::connect(&format!("{}/postgres", server_url()))
                    .await
                    .ok()?;
                sqlx::query(&format!("drop database if exists {name} with (force)"))
                    .execute(&mut admin)
                    .await
                    .ok()
            })
        })
        .join();
    }
}
