use std::sync::Arc;
use std::time::Duration;

use super::codec::{self, tests::typical};
use super::*;
use crate::run::RunRecord;

fn meta(name: &str) -> Arc<ProbeMeta> {
    Arc::new(ProbeMeta {
        name: name.into(),
        version: "v1".into(),
        definition: Arc::from(
            serde_json::value::RawValue::from_string(r#"{"kind":"http"}"#.into()).unwrap(),
        ),
        source: format!("probes/{name}.yaml"),
    })
}

fn encoded(r: &RunRecord) -> Vec<u8> {
    let mut b = Vec::new();
    codec::encode_run(r, &mut b);
    b
}

/// Opens the spool in `dir` and reads back every run it replays: its
/// segment, its probe, its bytes.
/// A run read back: its segment, its probe, its bytes.
type Back = (u64, Arc<ProbeMeta>, Box<[u8]>);

fn open(dir: &Path) -> (Spool, Vec<Back>) {
    let (spool, replayed) = Spool::open(dir, Duration::from_secs(1)).unwrap();
    let mut runs = Vec::new();
    for r in replayed {
        let (read, ended) = spool
            .read_back(r.segment, 0, 0, r.runs, usize::MAX)
            .unwrap();
        assert!(!ended, "every run counted at open is read back");
        assert_eq!(
            read.iter().map(|(_, b)| b.len() as u64).sum::<u64>(),
            r.bytes
        );
        runs.extend(read.into_iter().map(|(m, b)| (r.segment, m, b)));
    }
    (spool, runs)
}

fn seg_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "LOCK" && n != "instance")
        .collect();
    v.sort();
    v
}

#[test]
fn runs_not_done_come_back_after_a_crash_in_order_with_their_probe() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (meta("a"), meta("b"));
    let runs: Vec<RunRecord> = (0..5)
        .map(|i| typical(if i % 2 == 0 { a.clone() } else { b.clone() }))
        .collect();
    {
        let (spool, replayed) = open(dir.path());
        assert!(replayed.is_empty());
        for r in &runs {
            spool.append(&r.meta, &encoded(r));
        }
        spool.flush(false, false);
        // A crash: the process ends here without closing the spool.
    }
    let (_spool, replayed) = open(dir.path());
    assert_eq!(replayed.len(), 5);
    for (r, (_, m, bytes)) in runs.iter().zip(&replayed) {
        assert_eq!(m.name, r.meta.name);
        assert_eq!(m.definition.get(), r.meta.definition.get());
        let back = codec::decode_run(bytes, m.clone()).unwrap();
        assert_eq!(back.run_id, r.run_id);
        assert_eq!(back.outcome, r.outcome);
    }
}

#[test]
fn a_segment_goes_once_its_runs_are_done_and_a_clean_close_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let m = meta("a");
    let (spool, _) = open(dir.path());
    let r = typical(m.clone());
    let (seg, _) = spool.append(&m, &encoded(&r));
    spool.append(&m, &encoded(&r));
    spool.flush(true, false);
    assert_eq!(seg_files(dir.path()).len(), 1);
    spool.done(seg, 1);
    spool.flush(true, true);
    assert_eq!(seg_files(dir.path()).len(), 1, "one run is not done");
    spool.done(seg, 1);
    spool.flush(true, true);
    assert!(seg_files(dir.path()).is_empty());
    drop(spool);
    let (_s, replayed) = open(dir.path());
    assert!(replayed.is_empty());
}

#[test]
fn segments_roll_and_the_done_ones_are_deleted_while_later_ones_stay() {
    let dir = tempfile::tempdir().unwrap();
    let m = meta("a");
    let (spool, _) = open(dir.path());
    let r = encoded(&typical(m.clone()));
    let per_segment = (SEGMENT_BYTES as usize / r.len()) + 1;
    let (first, _) = spool.append(&m, &r);
    for _ in 1..per_segment {
        spool.append(&m, &r);
    }
    spool.flush(false, false);
    let (second, _) = spool.append(&m, &r);
    assert_eq!(second, first + 1, "the next run starts a new segment");
    spool.flush(false, false);
    assert_eq!(seg_files(dir.path()).len(), 2);
    spool.done(first, per_segment as u64);
    spool.flush(false, false);
    assert_eq!(seg_files(dir.path()), vec![format!("{second:016}.seg")]);
    drop(spool);
    let (_s, replayed) = open(dir.path());
    assert_eq!(replayed.len(), 1, "only the run of the second segment");
    assert_eq!(
        replayed[0].1.name, "a",
        "the second segment holds the probe again"
    );
}

#[test]
fn a_torn_tail_replays_what_precedes_it() {
    let dir = tempfile::tempdir().unwrap();
    let m = meta("a");
    {
        let (spool, _) = open(dir.path());
        for _ in 0..3 {
            spool.append(&m, &encoded(&typical(m.clone())));
        }
        spool.flush(false, false);
    }
    let path = dir.path().join(&seg_files(dir.path())[0]);
    let whole = fs::read(&path).unwrap();
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(whole.len() as u64 - 5).unwrap();
    let (s, replayed) = open(dir.path());
    assert_eq!(replayed.len(), 2, "the cut frame is not replayed");
    drop(s);
    // Garbage inside the last frame: its checksum no longer matches.
    let mut bytes = whole.clone();
    let n = bytes.len();
    bytes[n - 3] ^= 0xff;
    fs::write(&path, &bytes).unwrap();
    let (s, replayed) = open(dir.path());
    assert_eq!(replayed.len(), 2, "the damaged frame is not replayed");
    drop(s);
    fs::write(&path, &whole).unwrap();
    assert_eq!(open(dir.path()).1.len(), 3);
}

#[test]
fn a_segment_of_another_format_is_set_aside_not_deleted() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("0000000000000007.seg"),
        b"PRSPOOL9 whatever",
    )
    .unwrap();
    let (spool, replayed) = open(dir.path());
    assert!(replayed.is_empty());
    assert!(dir.path().join("0000000000000007.seg.unreadable").exists());
    let m = meta("a");
    assert_eq!(
        spool.append(&m, &encoded(&typical(m.clone()))).0,
        8,
        "ids continue past it"
    );
    drop(spool);
    // Cut before its header: empty, not unreadable; ids never reuse a set-aside one.
    fs::write(dir.path().join("0000000000000003.seg"), b"PRSP").unwrap();
    let (spool, replayed) = open(dir.path());
    assert!(replayed.is_empty());
    assert!(!dir.path().join("0000000000000003.seg.unreadable").exists());
    assert_eq!(spool.append(&m, &encoded(&typical(m.clone()))).0, 8);
}

#[test]
fn a_stalled_disk_bounds_what_waits_to_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(dir.path());
    let m = meta("a");
    assert_eq!(spool.append(&m, b"kept").0, 0);
    // Nothing written (no writer thread: the disk "hangs"): appends stop
    // at the bound instead of growing memory.
    let big = vec![7u8; 1 << 20];
    let mut spooled = 0;
    for _ in 0..(MAX_PENDING >> 20) + 8 {
        if spool.append(&m, &big).0 != NOT_SPOOLED {
            spooled += 1;
        }
    }
    assert!(spooled <= MAX_PENDING >> 20, "{spooled}");
    assert!(spool.bytes() < (MAX_PENDING + (2 << 20)) as u64);
    // A run not spooled is done without touching a segment's count.
    spool.done(NOT_SPOOLED, 8);
    spool.flush(true, false);
    assert_ne!(
        spool.append(&m, b"after").0,
        NOT_SPOOLED,
        "spooled again once written"
    );
    spool.flush(true, false);
    drop(spool);
    let (_, replayed) = open(dir.path());
    assert_eq!(
        replayed.len(),
        spooled + 2,
        "every spooled run, none of the rest"
    );
}

#[test]
fn a_second_process_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_first, _) = open(dir.path());
    let err = Spool::open(dir.path(), Duration::from_secs(1)).unwrap_err();
    assert!(matches!(err, SpoolError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("its own spool.dir"), "{err}");
}

#[test]
fn the_instance_id_is_kept_across_restarts_and_differs_between_directories() {
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = open(one.path()).0.instance().to_string();
    let again = open(one.path()).0.instance().to_string();
    assert_eq!(
        first, again,
        "a restart on the same directory is the same instance"
    );
    assert_ne!(
        first,
        open(two.path()).0.instance(),
        "each directory its own"
    );
    fs::write(one.path().join("instance"), "not a uuid").unwrap();
    let replaced = open(one.path()).0.instance().to_string();
    assert!(uuid::Uuid::parse_str(&replaced).is_ok(), "{replaced}");
}

#[test]
fn an_unwritable_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    fs::write(&file, b"").unwrap();
    let err = Spool::open(&file.join("spool"), Duration::from_secs(1)).unwrap_err();
    assert!(
        err.to_string().contains("cannot use spool directory"),
        "{err}"
    );
    assert!(err.to_string().contains("spool.dir"), "{err}");
}
