//! The screen's tests: its plan, the daily cycle cancelling, change points
//! called for once, and the end-of-window call.

use super::*;
use crate::results::hist::SparseHist;
use crate::run::PHASES;

const STEP: TimeDelta = TimeDelta::minutes(5);
const CFG: changepoint::Config = changepoint::Config {
    window_len: 50,
    max_pvalue: 0.001,
    min_magnitude: 0.0,
    min_segment: 5,
};

fn t0() -> DateTime<Utc> {
    "2026-11-29T00:00:00Z".parse().unwrap()
}

/// Point `i` (5 minutes each from `t0`) of `days` back: 20 runs around
/// `median_us` with a little noise, `failures` of them failed.
fn point(days: i64, i: i64, median_us: f64, failures: i64) -> TrendPoint {
    let mut total = SparseHist::default();
    let level = median_us * (1.0 + 0.004 * ((i * 37 + days * 5) % 11 - 5) as f64);
    for k in 0..20 {
        let wobble = 1.0 + 0.01 * ((i * 7 + k) % 11 - 5) as f64;
        total.record((level * wobble) as u64);
    }
    let mut phases = vec![SparseHist::default(); PHASES.len()];
    phases[0] = total;
    TrendPoint {
        time: t0() - TimeDelta::days(days) + STEP * i32::try_from(i).unwrap(),
        runs: 20,
        failures,
        phases,
    }
}

/// A day's 100 points: a rising stretch of the daily cycle (100 → 140
/// ms), `extra` from point 90 on; a failure in 7 points, or `fails` in
/// each from 90 when it is not 0.
fn day(days: i64, extra: f64, fails: i64) -> Vec<TrendPoint> {
    (0..100)
        .map(|i| {
            let cycle = 100_000.0 * (1.0 + 0.4 * i as f64 / 100.0);
            let usual = i64::from(i % 7 == 0);
            if i < 90 {
                point(days, i, cycle, usual)
            } else {
                point(
                    days,
                    i,
                    cycle * extra,
                    if fails == 0 { usual } else { fails },
                )
            }
        })
        .collect()
}

fn to(upto: i32) -> DateTime<Utc> {
    t0() + STEP * upto
}

#[test]
fn a_pass_without_a_new_point_does_nothing_and_two_hours_bring_a_full_one() {
    let pts = day(0, 1.0, 0);
    let s = Screen::new(STEP, to(40), TimeDelta::zero(), &pts[..40], &[]);
    assert_eq!(s.plan(STEP, to(40)), Plan::Nothing);
    assert_eq!(s.plan(STEP, to(41)), Plan::Extend { from: to(40) });
    assert_eq!(s.plan(STEP, to(40) + FULL_EVERY), Plan::Full);
    assert_eq!(s.plan(STEP * 2, to(41)), Plan::Full, "a new step");
    // Spread over probes: an offset brings the next full pass sooner.
    let early = Screen::new(STEP, to(40), TimeDelta::minutes(30), &pts[..40], &[]);
    let sooner = to(40) + FULL_EVERY - TimeDelta::minutes(30);
    assert_eq!(
        early.plan(STEP, sooner - STEP),
        Plan::Extend { from: to(40) }
    );
    assert_eq!(early.plan(STEP, sooner), Plan::Full);
    // Rebuilt at a late pass, a screen keeps its schedule.
    let late = sooner + TimeDelta::minutes(25);
    assert_eq!(early.behind_schedule(late), TimeDelta::minutes(25));
    let rebuilt = Screen::new(STEP, late, early.behind_schedule(late), &pts[..40], &[]);
    assert_eq!(
        rebuilt.plan(STEP, sooner + FULL_EVERY),
        Plan::Full,
        "due when it would have been"
    );
}

#[test]
fn the_daily_cycle_cancels_and_a_step_beyond_it_calls_for_the_full_analysis() {
    let earlier = vec![day(1, 1.0, 0), day(2, 1.0, 0)];
    // The cycle alone: the raw total has change points, its ratios none.
    let quiet = day(0, 1.0, 0);
    let raw: Vec<f64> = quiet.iter().filter_map(|p| total_at(p, 0.5)).collect();
    assert!(!changepoint::detect(&raw, &CFG).unwrap().is_empty());
    let mut s = Screen::new(STEP, to(90), TimeDelta::zero(), &quiet[..90], &earlier);
    let from = to(96) - STEP * 96;
    assert!(!s.extend(&quiet[90..96], from, to(96), true, &CFG, 4));
    assert_eq!(s.points.len(), 96);
    // +30 % from point 90, or failures: due.
    for (extra, fails) in [(1.3, 0), (1.0, 10)] {
        let today = day(0, extra, fails);
        let mut s = Screen::new(STEP, to(90), TimeDelta::zero(), &today[..90], &earlier);
        assert!(
            s.extend(&today[90..96], from, to(96), false, &CFG, 4),
            "×{extra}, {fails} failures"
        );
    }
}

#[test]
fn a_change_point_seen_is_not_called_for_again_until_its_evidence_grows() {
    let earlier = vec![day(1, 1.0, 0), day(2, 1.0, 0)];
    let today = day(0, 1.3, 0);
    let from = to(96) - STEP * 96;
    let mut s = Screen::new(STEP, to(90), TimeDelta::zero(), &today[..90], &earlier);
    assert!(s.extend(&today[90..96], from, to(96), false, &CFG, 4));
    // A threshold under which the change point is in the screen's band
    // only (found, but weaker than the full test asks).
    let p = (s.called.iter().map(|c| c.p_value)).fold(f64::INFINITY, f64::min);
    let weak = changepoint::Config {
        max_pvalue: p / 2.0,
        ..CFG
    };
    assert!(
        s.extend(&[], from, to(96), false, &weak, 4),
        "the full analysis did not run (a failed read): called again"
    );
    s.acted();
    assert!(
        !s.extend(&[], from, to(96), false, &weak, 4),
        "seen, and no stronger"
    );
    assert!(
        s.extend(&[], from, to(96), false, &CFG, 4),
        "as strong as the full test asks: called again"
    );
    s.acted();
    s.seen
        .iter_mut()
        .for_each(|c| c.p_value *= CALL_AGAIN_FACTOR * 2.0);
    assert!(
        s.extend(&[], from, to(96), false, &weak, 4),
        "its p-value fell"
    );
    // A screen rebuilt by the full analysis has seen what is in its window.
    let mut rebuilt = Screen::new(STEP, to(96), TimeDelta::zero(), &today[..96], &earlier);
    rebuilt.settle(false, &weak, 4);
    assert!(!rebuilt.extend(&[], from, to(96), false, &weak, 4));
    let mut unsettled = Screen::new(STEP, to(96), TimeDelta::zero(), &today[..96], &earlier);
    assert!(unsettled.extend(&[], from, to(96), false, &weak, 4));
}

#[test]
fn a_step_too_young_for_the_change_point_test_calls_at_the_end_of_the_window() {
    let earlier = vec![day(1, 1.0, 0), day(2, 1.0, 0)];
    let from = to(94) - STEP * 96;
    // +30 % in the last 4 points: under the change-point test's 5.
    let today = day(0, 1.3, 0);
    let mut s = Screen::new(STEP, to(90), TimeDelta::zero(), &today[..90], &earlier);
    assert!(s.extend(&today[90..94], from, to(94), false, &CFG, 4));
    assert!(s.called.iter().all(|c| c.series == Series::Tail));
    assert_eq!(
        s.called.first().map(|c| (c.minute, c.rising)),
        Some((minute_of(to(90)), true))
    );
    s.acted();
    assert!(
        !s.extend(&[], from, to(94), false, &CFG, 4),
        "seen, and no stronger"
    );
    // Without the step: no call.
    let quiet = day(0, 1.0, 0);
    let mut s = Screen::new(STEP, to(90), TimeDelta::zero(), &quiet[..90], &earlier);
    assert!(!s.extend(&quiet[90..94], from, to(94), false, &CFG, 4));
}

#[test]
fn without_an_earlier_day_only_failures_are_screened() {
    let today = day(0, 1.3, 0);
    let mut s = Screen::new(STEP, to(90), TimeDelta::zero(), &today[..90], &[]);
    assert!(s.points.iter().all(|p| p.p50.is_nan()));
    assert!(!s.extend(&today[90..96], to(0), to(96), true, &CFG, 4));
    let failing = day(0, 1.0, 10);
    let mut s = Screen::new(STEP, to(90), TimeDelta::zero(), &failing[..90], &[]);
    assert!(s.extend(&failing[90..96], to(0), to(96), true, &CFG, 4));
}
