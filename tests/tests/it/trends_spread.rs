//! A wider spread with the median unchanged, found through a real store
//! as a step of the total's p95 (`prober::analysis::spread`).

use chrono::{DateTime, TimeDelta, Utc};
use prober::analysis::{analyse, AnalysisConfig};

use crate::db::TestDb;
use crate::store::meta;
use crate::trends::{all, store, write_hours};

#[tokio::test]
async fn a_spread_that_widens_with_the_median_unchanged_is_a_step_of_the_p95() {
    // From an hour before the end, first byte alternates 55 and 105 ms
    // around its 80 ms: the median stays, the p95 rises (`analysis::spread`).
    let db = TestDb::create().await;
    let store = store(&db, "trend-lab").await;
    let end: DateTime<Utc> = "2026-11-30T18:00:00Z".parse().unwrap();
    let from = 7 * 60;
    write_hours(&store, &meta("checkout"), end, |i| {
        match (i < from, i % 2) {
            (true, _) => 80_000,
            (false, 0) => 55_000,
            (false, _) => 105_000,
        }
    })
    .await;
    let pass = analyse(
        &store,
        &AnalysisConfig::default(),
        end + TimeDelta::minutes(3),
    )
    .await
    .unwrap();
    assert_eq!(pass.new, 1, "{pass:?}");
    let found = store.findings(&all()).await.unwrap();
    let f = &found[0];
    assert_eq!(
        (f.phase.as_str(), f.kind.as_str(), f.statistic.as_str()),
        ("total", "step", "p95"),
        "{f:?}"
    );
    let late = (f.change_at - (end - TimeDelta::hours(1))).abs();
    assert!(late <= TimeDelta::minutes(10), "{f:?}");
    assert!(f.after > 1.1 * f.before, "{f:?}");
    assert!(
        f.summary.contains("spread wider, median unchanged"),
        "{}",
        f.summary
    );
}
