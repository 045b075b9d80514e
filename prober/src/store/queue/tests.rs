//! The memory window: runs past it wait on disk and come back in order,
//! each once; drops take the oldest wherever they are; a restart reads the
//! spool back through the same path.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::run::ProbeMeta;
use crate::store::spool::codec::tests::typical;

const WINDOW: usize = 64 << 10;

fn meta() -> Arc<ProbeMeta> {
    Arc::new(ProbeMeta {
        name: "w".into(),
        version: "v1".into(),
        definition: Arc::from(
            serde_json::value::RawValue::from_string(r#"{"kind":"http"}"#.into()).unwrap(),
        ),
        source: "probes/w.yaml".into(),
    })
}

fn spooled(dir: &Path, capacity: usize) -> (Arc<Spool>, ResultQueue) {
    let (spool, replayed) = Spool::open(dir, Duration::from_secs(1)).unwrap();
    let spool = Arc::new(spool);
    let q = ResultQueue::bounded(
        capacity,
        usize::MAX,
        Some((spool.clone(), WINDOW)),
        replayed,
    );
    (spool, q)
}

/// Pushes `n` runs, the spool writing every 50 (as its thread does every
/// 100 ms); returns their ids in order and the most memory held.
fn push(spool: &Spool, q: &ResultQueue, n: usize) -> (Vec<uuid::Uuid>, usize) {
    let m = meta();
    let mut ids = Vec::new();
    let mut most = 0;
    for i in 0..n {
        let r = typical(m.clone());
        ids.push(r.run_id);
        q.push(&r);
        if i % 50 == 49 {
            spool.flush(false, false);
        }
        most = most.max(q.memory_bytes());
    }
    spool.flush(false, false);
    (ids, most)
}

/// Takes everything, as the writer does, in batches of 100.
fn drain(q: &ResultQueue) -> Vec<uuid::Uuid> {
    let mut out = Vec::new();
    loop {
        let b = q.take(100);
        if b.is_empty() {
            return out;
        }
        out.extend(b.records.iter().map(|r| r.run_id));
        q.written(b);
    }
}

#[test]
fn past_the_window_runs_wait_on_disk_and_come_back_in_order_each_once() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, q) = spooled(dir.path(), 1_000_000);
    let (ids, most) = push(&spool, &q, 5_000);
    let cost = q.bytes() / q.len();
    assert!(
        q.bytes() > 10 * WINDOW,
        "the test queues well past the window"
    );
    // The front's window, one run over it, and the runs not yet written.
    assert!(
        most <= WINDOW + 51 * cost,
        "memory held {most} bytes with a window of {WINDOW}"
    );
    assert_eq!(q.len(), 5_000);
    assert_eq!(drain(&q), ids);
    assert_eq!((q.len(), q.bytes(), q.dropped()), (0, 0, 0));
    spool.flush(true, true);
    assert_eq!(spool.bytes(), 0, "every segment done and deleted");
}

#[test]
fn a_full_queue_drops_the_oldest_even_when_they_are_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, q) = spooled(dir.path(), 1_000);
    let (ids, _) = push(&spool, &q, 3_000);
    assert_eq!(q.dropped(), 2_000);
    assert_eq!(drain(&q), ids[2_000..]);
    spool.flush(true, true);
    assert_eq!(
        spool.bytes(),
        0,
        "the dropped runs are done in the spool too"
    );
}

#[test]
fn a_restart_reads_the_spooled_runs_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let ids = {
        let (spool, q) = spooled(dir.path(), 1_000_000);
        let (ids, _) = push(&spool, &q, 3_000);
        // Half written to Postgres, then the process dies.
        let first = q.take(1_500);
        q.written(first);
        spool.flush(true, false);
        ids
    };
    let (_spool, q) = spooled(dir.path(), 1_000_000);
    assert_eq!(
        q.len(),
        3_000,
        "the segment comes back whole (the store skips what it has)"
    );
    assert!(
        q.memory_bytes() == 0,
        "replayed runs wait on disk until taken"
    );
    assert_eq!(drain(&q), ids);
}

#[test]
fn writes_that_catch_up_bring_new_runs_back_into_memory() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, q) = spooled(dir.path(), 1_000_000);
    let (mut ids, _) = push(&spool, &q, 2_000);
    let mut out = drain(&q);
    // Drained: new runs are held in memory again, none on disk.
    let (more, _) = push(&spool, &q, 10);
    assert_eq!(q.memory_bytes(), q.bytes());
    ids.extend(more);
    out.extend(drain(&q));
    assert_eq!(out, ids);
}
