//! Steps judged against the daily cycle, one finding per change, and the
//! phases named, on hand-built points.

use super::*;
use crate::results::hist::SparseHist;

/// A point at `minutes` past 2026-11-29 00:00 UTC less `days`, holding
/// `runs` totals spread evenly over ±10 % around `median_us`.
fn point(days: i64, minutes: i64, median_us: f64, runs: u64) -> TrendPoint {
    let mut total = SparseHist::default();
    for i in 0..runs {
        let spread = 0.9 + 0.2 * (i as f64 + 0.5) / runs as f64;
        total.record((median_us * spread) as u64);
    }
    let mut phases = vec![SparseHist::default(); PHASES.len()];
    phases[0] = total;
    TrendPoint {
        time: "2026-11-29T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
            - chrono::TimeDelta::days(days)
            + chrono::TimeDelta::minutes(minutes),
        runs: runs as i64,
        failures: 0,
        phases,
    }
}

/// 24 points of 5 minutes a day: 100 ms, then `after_us` from the 12th;
/// the same on each earlier day with `earlier_after_us`.
fn days(after_us: f64, earlier: &[f64]) -> (Vec<TrendPoint>, Vec<Vec<TrendPoint>>) {
    let day = |d: i64, after: f64| -> Vec<TrendPoint> {
        (0..24)
            .map(|i| point(d, 5 * i, if i < 12 { 100_000.0 } else { after }, 50))
            .collect()
    };
    let history = earlier
        .iter()
        .enumerate()
        .map(|(k, &a)| day(k as i64 + 1, a))
        .collect();
    (day(0, after_us), history)
}

/// The subject of the steps these tests find.
fn shop() -> Subject {
    Subject {
        probe_id: 1,
        probe: "shop".into(),
        location_id: 1,
        location: "lab".into(),
        runs: 1_200,
    }
}

fn judged(after_us: f64, earlier: &[f64]) -> bool {
    let (today, history) = days(after_us, earlier);
    let before: Vec<&TrendPoint> = today[..12].iter().collect();
    let after: Vec<&TrendPoint> = today[12..].iter().collect();
    let floor = Floor::default();
    let c = confirmed(&before, &after, 0, &floor).expect("a 30 % step is confirmed");
    beyond_the_daily_cycle(&before, &after, 0, &c, &history, &floor)
}

#[test]
fn a_step_the_cycle_made_yesterday_too_is_not_a_step() {
    // Today +30 %; yesterday and the day before the same hours moved +30 %.
    assert!(!judged(130_000.0, &[130_000.0, 130_000.0]));
    // One earlier day like today is enough to explain it.
    assert!(!judged(130_000.0, &[100_000.0, 129_000.0]));
}

#[test]
fn a_step_beyond_the_cycle_is_kept() {
    assert!(judged(130_000.0, &[100_000.0, 100_000.0]));
    // The cycle explains +10 %, about +18 % is left: over the 5 % floor.
    assert!(judged(130_000.0, &[110_000.0, 108_000.0]));
    // One earlier day is not enough: one day's chance level at these
    // hours would be the only evidence.
    assert!(!judged(130_000.0, &[100_000.0]));
}

#[test]
fn a_step_of_the_total_and_a_phase_is_one_finding_on_the_total_naming_it() {
    // First byte is 60 % of the total; both step +30 % at the 12th point.
    let with_first_byte = |pts: Vec<TrendPoint>| -> Vec<TrendPoint> {
        pts.into_iter()
            .map(|mut p| {
                let mut fb = SparseHist::default();
                let total = p.phases[0].clone();
                for (lo, _, n) in total.bins() {
                    for _ in 0..n {
                        fb.record(lo * 6 / 10);
                    }
                }
                p.phases[4] = fb;
                p
            })
            .collect()
    };
    let (today, history) = days(130_000.0, &[100_000.0, 100_000.0]);
    let today = with_first_byte(today);
    let history: Vec<Vec<TrendPoint>> = history.into_iter().map(with_first_byte).collect();
    let subject = shop();
    let cfg = StepConfig::default();
    let found = steps(
        &subject,
        &today,
        candidates(&today, &history, &[("p50", 0.5)], &cfg, None, true),
        &history,
        &cfg,
    );
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].phase, 0);
    assert!(
        found[0].summary.contains("first_byte +"),
        "{}",
        found[0].summary
    );
    // The phases are named from their bins, not their change points: an
    // analysis that looks for the total's change points alone (one the
    // screen called) finds the same.
    let total_only = candidates(&today, &history, &[("p50", 0.5)], &cfg, None, false);
    assert_eq!(steps(&subject, &today, total_only, &history, &cfg), found);
}

#[test]
fn a_step_of_one_phase_alone_waits_for_an_analysis_of_every_phase() {
    // First byte +30 % at the 12th point; the total (recorded apart here)
    // does not move.
    let with_first_byte = |pts: Vec<TrendPoint>, after: f64| -> Vec<TrendPoint> {
        (pts.into_iter().enumerate())
            .map(|(i, mut p)| {
                let median = if i < 12 { 60_000.0 } else { after };
                p.phases[4] = point(0, 0, median, 50).phases[0].clone();
                p
            })
            .collect()
    };
    let (today, history) = days(100_000.0, &[100_000.0, 100_000.0]);
    let today = with_first_byte(today, 78_000.0);
    let history: Vec<Vec<TrendPoint>> = (history.into_iter())
        .map(|d| with_first_byte(d, 60_000.0))
        .collect();
    let cfg = StepConfig::default();
    let found = |every_phase| {
        let cands = candidates(&today, &history, &[("p50", 0.5)], &cfg, None, every_phase);
        steps(&shop(), &today, cands, &history, &cfg)
    };
    let all = found(true);
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(all[0].phase, 4);
    assert!(found(false).is_empty());
}

#[test]
fn a_change_split_twice_the_same_way_is_one_finding_the_clearer() {
    let at = |m: i64| {
        "2026-11-28T17:00:00Z".parse::<DateTime<Utc>>().unwrap() + chrono::TimeDelta::minutes(m)
    };
    let f = |phase: i16, minute: i64, after: f64, cles: f64| NewFinding {
        probe_id: 1,
        location_id: 1,
        phase,
        statistic: "p50".into(),
        kind: "step",
        change_at: at(minute),
        window_end: at(300),
        before: 100.0,
        after,
        p_value: 1e-6,
        effect_size: Some(cles),
        summary: format!("{phase} at {minute}"),
        crosses: None,
    };
    let step = chrono::TimeDelta::minutes(5);
    let kept = one_per_change(
        vec![
            f(0, 25, 110.0, 0.62), // early, a mixed after
            f(0, 85, 112.0, 0.71), // the change
            f(0, 150, 90.0, 0.30), // down again: another change
            f(3, 30, 110.0, 0.65), // another phase
        ],
        step,
    );
    let said: Vec<&str> = kept.iter().map(|f| f.summary.as_str()).collect();
    assert_eq!(said, ["0 at 85", "0 at 150", "3 at 30"]);
    // Farther apart than an hour: two changes.
    let apart = one_per_change(vec![f(0, 0, 110.0, 0.7), f(0, 65, 120.0, 0.7)], step);
    assert_eq!(apart.len(), 2);
}

#[test]
fn a_phase_the_daily_cycle_moved_is_named_unchanged() {
    // Each phase's runs spread ±10 % around its median, 50 a point.
    let pt = |days: i64, i: i64, tls: f64, first_byte: f64| {
        let mut p = point(days, 5 * i, tls + first_byte, 50);
        for (phase, median) in [(3, tls), (4, first_byte)] {
            let mut h = SparseHist::default();
            for k in 0..50 {
                h.record((median * (0.9 + 0.2 * (k as f64 + 0.5) / 50.0)) as u64);
            }
            p.phases[phase] = h;
        }
        p
    };
    // From the 12th point the cycle takes tls from 20 to 16 ms, today
    // and yesterday; first byte steps from 60 to 80 ms today only.
    let day = |days: i64, stepped: bool| -> Vec<TrendPoint> {
        (0..24)
            .map(|i| {
                let late = i >= 12;
                let tls = if late { 16_000.0 } else { 20_000.0 };
                let fb = if late && stepped { 80_000.0 } else { 60_000.0 };
                pt(days, i, tls, fb)
            })
            .collect()
    };
    let today = day(0, true);
    let history = vec![day(1, false), day(2, false)];
    let (b, a): (Vec<&TrendPoint>, Vec<&TrendPoint>) =
        (today[..12].iter().collect(), today[12..].iter().collect());
    let said = phase_breakdown(&b, &a, &history, &Floor::default());
    assert!(said.starts_with("first_byte +"), "{said}");
    assert!(said.contains("tls"), "{said}");
    assert!(!said.contains("tls -"), "{said}");
}

#[test]
fn without_an_earlier_day_a_step_waits() {
    assert!(!judged(130_000.0, &[]));
}

#[test]
fn a_sparse_earlier_day_is_no_baseline() {
    // Yesterday like today would explain the step; too sparse, it does
    // not; the two days before it are the baselines.
    let (today, mut history) = days(130_000.0, &[130_000.0, 100_000.0, 100_000.0]);
    for p in &mut history[0] {
        p.runs = 10;
    }
    let before: Vec<&TrendPoint> = today[..12].iter().collect();
    let after: Vec<&TrendPoint> = today[12..].iter().collect();
    let floor = Floor::default();
    let c = confirmed(&before, &after, 0, &floor).unwrap();
    assert!(beyond_the_daily_cycle(
        &before, &after, 0, &c, &history, &floor
    ));
    // With only one baseline left, the step waits.
    history.pop();
    assert!(!beyond_the_daily_cycle(
        &before, &after, 0, &c, &history, &floor
    ));
}

/// 96 points of 5 minutes ending at 2026-11-29 08:00 less `days`, 20 runs
/// each, on a daily cycle that rises 15 % over the 8 hours (the same every
/// day), with a little noise per point; from point `step_at` on, × `step`.
fn cycle_day(days: i64, step_at: usize, step: f64) -> Vec<TrendPoint> {
    (0..96)
        .map(|i| {
            let cycle = 100_000.0 * (1.0 + 0.15 * i as f64 / 96.0);
            let noise = 1.0 + 0.01 * ((i as i64 * 37 + days * 5) % 11 - 5) as f64;
            let level = if i >= step_at { cycle * step } else { cycle };
            point(days, 5 * i as i64, level * noise, 20)
        })
        .collect()
}

#[test]
fn a_step_six_points_old_on_a_rising_cycle_is_found_where_it_began() {
    let today = cycle_day(0, 90, 1.5);
    let history = vec![cycle_day(1, 96, 1.0), cycle_day(2, 96, 1.0)];
    let subject = shop();
    let cfg = StepConfig::default();
    let cands = candidates(&today, &history, &[("p50", 0.5)], &cfg, None, true);
    let found = steps(&subject, &today, cands, &history, &cfg);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].change_at, today[90].time, "{found:#?}");
    // The cycle alone, without the step, is no change.
    let flat = cycle_day(0, 96, 1.0);
    let cands = candidates(&flat, &history, &[("p50", 0.5)], &cfg, None, true);
    assert!(steps(&subject, &flat, cands, &history, &cfg).is_empty());
}
