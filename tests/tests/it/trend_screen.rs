//! The periodic analysis keeps each probe's light series between passes
//! (`prober::analysis::screen`): a pass reads only the points closed since
//! the last one and runs the full analysis only when they show a change.
//! It must find a step at the same pass as a full analysis of every pass
//! would, skip the full analysis on quiet passes, and leave the finding as
//! that analysis does when its called analyses read held points.

use chrono::{DateTime, TimeDelta, Utc};
use prober::analysis::{analyse, Analyser, AnalysisConfig};

use crate::db::TestDb;
use crate::store::meta;
use crate::trends::{all, with_step, write_hours};

#[tokio::test]
async fn the_screened_analysis_finds_a_step_when_a_full_one_does_and_skips_quiet_passes() {
    let (db_full, db_screened) = (TestDb::create().await, TestDb::create().await);
    let end: DateTime<Utc> = "2026-11-30T18:00:00Z".parse().unwrap();
    // The step is at `end - 2h`; passes every 5 minutes from 40 minutes
    // before it, as the daemon runs them.
    let (full, screened) = (
        with_step(&db_full, end).await,
        with_step(&db_screened, end).await,
    );
    // A second probe, steady: the new points of both are read together.
    for store in [&full, &screened] {
        write_hours(store, &meta("steady"), end, |_| 80_000).await;
    }
    let cfg = AnalysisConfig::default();
    let mut analyser = Analyser::default();
    let first = end - TimeDelta::hours(2) - TimeDelta::minutes(40) + TimeDelta::minutes(3);
    let (mut found_full, mut found_screened) = (None, None);
    let (mut quiet_full_passes, mut held_passes, mut updated_from_held) = (0, 0, 0);
    for k in 0..30 {
        let now = first + TimeDelta::minutes(5 * k);
        let a = analyse(&full, &cfg, now).await.unwrap();
        let b = analyser.pass(&screened, &cfg, now).await.unwrap();
        if k == 0 {
            assert_eq!(b.full, 2, "a probe's first pass is a full analysis");
            // Again at the same time: no point has closed, nothing is read.
            let again = analyser.pass(&screened, &cfg, now).await.unwrap();
            assert_eq!((again.subjects, again.full), (2, 0), "{again:?}");
        }
        if a.new > 0 && found_full.is_none() {
            found_full = Some(k);
        }
        if b.new > 0 && found_screened.is_none() {
            found_screened = Some(k);
        }
        // Before the step (at k = 8); the periodic full analyses of the two
        // probes (ids 1 and 2) fall 110 and 100 minutes after the first pass.
        if (1..8).contains(&k) {
            quiet_full_passes += b.full;
        }
        held_passes += b.held;
        // Only the stepped probe is called and has a finding (the steady
        // one's screen stays quiet), so a pass' updates are its.
        if b.held > 0 {
            updated_from_held += b.updated;
        }
    }
    let k = found_full.expect("the full analysis finds the step");
    assert_eq!(
        found_screened,
        Some(k),
        "the screened analysis finds it at the same pass"
    );
    assert_eq!(
        quiet_full_passes, 0,
        "before the step no pass runs the full analysis"
    );
    // After it the screen calls again while the step is young, and those
    // analyses read the points held since the last one, moved on by the
    // screen's new points (`hold.rs`): the finding they update ends as the
    // full analysis of every pass leaves it.
    assert!(held_passes > 0, "no called analysis read held points");
    assert!(
        updated_from_held > 0,
        "no analysis of held points updated a finding"
    );
    let (a, b) = (
        full.findings(&all()).await.unwrap(),
        screened.findings(&all()).await.unwrap(),
    );
    assert_eq!((a.len(), b.len()), (1, 1), "{a:#?}\n{b:#?}");
    assert_eq!(
        (a[0].change_at, &a[0].summary),
        (b[0].change_at, &b[0].summary)
    );
}

#[tokio::test]
async fn new_points_read_together_are_each_asked_pair_and_no_other() {
    use crate::store::record;
    use crate::trends::store as lab_store;
    use std::time::Duration;

    let db = TestDb::create().await;
    let (east, west) = (lab_store(&db, "east").await, lab_store(&db, "west").await);
    let at: DateTime<Utc> = "2026-11-30T18:00:00Z".parse().unwrap();
    let runs = |name: &str, us: u64| -> Vec<_> {
        (0..10)
            .map(|i| record(&meta(name), at + TimeDelta::minutes(i), us, true))
            .collect()
    };
    east.write_runs(&runs("a", 10_000)).await.unwrap();
    west.write_runs(&runs("a", 20_000)).await.unwrap();
    west.write_runs(&runs("b", 30_000)).await.unwrap();
    let id = |sql: &'static str| {
        let pool = east.pool().clone();
        async move {
            sqlx::query_scalar::<_, i32>(sql)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let (a, b) = (
        id("select id from probes where name = 'a'").await,
        id("select id from probes where name = 'b'").await,
    );
    let loc = |name: &'static str| {
        let pool = east.pool().clone();
        async move {
            sqlx::query_scalar::<_, i16>("select id from locations where name = $1")
                .bind(name)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let (e, w) = (loc("east").await, loc("west").await);
    let got = east
        .trend_points_of(
            &[(a, e), (b, w)],
            at,
            at + TimeDelta::minutes(10),
            Duration::from_secs(300),
        )
        .await
        .unwrap();
    let mut keys: Vec<_> = got.keys().copied().collect();
    keys.sort_unstable();
    let mut want = vec![(a, e), (b, w)];
    want.sort_unstable();
    assert_eq!(keys, want, "probe a at west was not asked for");
    for (key, us) in [((a, e), 10_000), ((b, w), 30_000)] {
        let points = &got[&key];
        assert_eq!(points.len(), 2, "two 5-minute points of {key:?}");
        assert_eq!(points.iter().map(|p| p.runs).sum::<i64>(), 10);
        let p50 = points[0].phases[0].value_at_quantile(0.5).unwrap();
        assert!(p50.abs_diff(us) <= us / 50, "{key:?}: {p50} µs");
    }
}

#[tokio::test]
async fn the_list_of_probes_is_read_again_every_half_hour() {
    use crate::store::record;
    use crate::trends::store as lab_store;

    let db = TestDb::create().await;
    let store = lab_store(&db, "east").await;
    let at: DateTime<Utc> = "2026-11-30T18:00:00Z".parse().unwrap();
    let runs = |name: &str, from: DateTime<Utc>| -> Vec<_> {
        (0..10)
            .map(|i| record(&meta(name), from + TimeDelta::minutes(i), 10_000, true))
            .collect()
    };
    store
        .write_runs(&runs("a", at - TimeDelta::minutes(10)))
        .await
        .unwrap();
    let cfg = AnalysisConfig::default();
    let mut analyser = Analyser::default();
    assert_eq!(analyser.pass(&store, &cfg, at).await.unwrap().subjects, 1);
    store.write_runs(&runs("b", at)).await.unwrap();
    let soon = analyser
        .pass(&store, &cfg, at + TimeDelta::minutes(25))
        .await;
    assert_eq!(soon.unwrap().subjects, 1, "the list is kept for 30 minutes");
    let later = analyser
        .pass(&store, &cfg, at + TimeDelta::minutes(30))
        .await;
    assert_eq!(later.unwrap().subjects, 2, "then read again: b is analysed");
}
