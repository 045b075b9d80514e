//! Hand-computed Mann–Kendall and Theil–Sen cases, and drifts planted on
//! diurnal latency series.

use super::*;
use crate::trend::noise::Noise;

/// 2026-11-02 05:00 UTC: windows need not start at midnight.
const START: f64 = 1_793_595_600.0;

fn hourly(hours: usize, seed: u64, value: impl Fn(f64) -> f64) -> Vec<Point> {
    let mut noise = Noise::new(seed);
    (0..hours)
        .map(|h| {
            let at = START + h as f64 * HOUR_SECS;
            Point {
                at,
                value: value(at) * (0.03 * noise.normal()).exp(),
            }
        })
        .collect()
}

/// 100 ms with a ±30 % daily cycle peaking at 15:00 UTC.
fn diurnal(at: f64) -> f64 {
    let phase = (at / DAY_SECS - 15.0 / 24.0) * std::f64::consts::TAU;
    100_000.0 * (1.0 + 0.3 * phase.cos())
}

#[test]
fn mann_kendall_with_ties_by_hand() {
    // x = [1, 2, 2, 3, 1]. Signs per i: i=0: +1 +1 +1 0 = 3; i=1: 0 +1 −1 = 0;
    // i=2: +1 −1 = 0; i=3: −1. S = 2.
    // Var = [5·4·15 − (2·1·9 for the two 1s) − (2·1·9 for the two 2s)] / 18
    //     = (300 − 36) / 18 = 14.667; z = (2 − 1)/√14.667 = 0.26112; p = 0.79400.
    let mk = mann_kendall(&[1.0, 2.0, 2.0, 3.0, 1.0]).unwrap();
    assert_eq!((mk.n, mk.s), (5, 2));
    assert!((mk.var_s - 264.0 / 18.0).abs() < 1e-12);
    assert!((mk.z - 0.261_116_483_9).abs() < 1e-9);
    assert!((mk.p_value - 0.794_002_680).abs() < 1e-6);
}

#[test]
fn mann_kendall_of_a_strictly_rising_series_by_hand() {
    // S = C(10,2) = 45, Var = 10·9·25/18 = 125, z = 44/√125 = 3.93548.
    let values: Vec<f64> = (1..=10).map(f64::from).collect();
    let mk = mann_kendall(&values).unwrap();
    assert_eq!(mk.s, 45);
    assert_eq!(mk.var_s, 125.0);
    assert!((mk.z - 3.935_479_640).abs() < 1e-8);
    assert!((mk.p_value - 8.303_070e-5).abs() < 1e-9);
    let falling: Vec<f64> = values.iter().rev().copied().collect();
    assert_eq!(mann_kendall(&falling).unwrap().s, -45);
}

#[test]
fn mann_kendall_of_nothing_or_constants_is_no_trend() {
    for values in [&[][..], &[4.0], &[4.0; 6]] {
        let mk = mann_kendall(values).unwrap();
        assert_eq!((mk.s, mk.z, mk.p_value), (0, 0.0, 1.0), "{values:?}");
    }
    assert_eq!(
        mann_kendall(&[1.0, f64::NAN]),
        Err(TrendError::NotFinite { index: 1 })
    );
}

fn points(pairs: &[(f64, f64)]) -> Vec<Point> {
    pairs
        .iter()
        .map(|&(at, value)| Point { at, value })
        .collect()
}

#[test]
fn theil_sen_by_hand_ignores_an_outlier() {
    // Slopes: six pairs among the first four are 2; with the last point they
    // are 99/4, 97/3, 95/2, 93. Ten slopes, the middle two are 2: median 2.
    let p = points(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0), (3.0, 7.0), (4.0, 100.0)]);
    assert_eq!(theil_sen(&p).unwrap(), Some(2.0));
    // Four points: slopes 2, 2, 2, 33, 48.5, 95 → (2 + 33) / 2.
    assert_eq!(theil_sen(&p[..2]).unwrap(), Some(2.0));
    let q = points(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0), (3.0, 100.0)]);
    assert_eq!(theil_sen(&q).unwrap(), Some(17.5));
}

#[test]
fn theil_sen_needs_two_times() {
    assert_eq!(theil_sen(&[]).unwrap(), None);
    assert_eq!(theil_sen(&points(&[(5.0, 1.0), (5.0, 9.0)])).unwrap(), None);
    // Pairs at the same time are skipped, the others count.
    let p = points(&[(0.0, 0.0), (0.0, 10.0), (10.0, 10.0)]);
    assert_eq!(theil_sen(&p).unwrap(), Some(0.5));
    let bad = points(&[(0.0, 1.0), (f64::INFINITY, 1.0)]);
    assert_eq!(theil_sen(&bad), Err(TrendError::NotFinite { index: 1 }));
}

#[test]
fn seasonal_kendall_by_hand() {
    // Hour 0 on three days: 1, 2, 3 (S = 3, Var = 3·2·11/18); hour 1: 3,
    // 2, 2 (S = −1 − 1 + 0 = −2, one tie of two: Var = (66 − 18)/18).
    let day = DAY_SECS;
    let pts = points(&[
        (0.0, 1.0),
        (HOUR_SECS, 3.0),
        (day, 2.0),
        (day + HOUR_SECS, 2.0),
        (2.0 * day, 3.0),
        (2.0 * day + HOUR_SECS, 2.0),
    ]);
    let sk = seasonal_kendall(&pts).unwrap();
    assert_eq!((sk.n, sk.s), (6, 1));
    assert!((sk.var_s - (66.0 / 18.0 + 48.0 / 18.0)).abs() < 1e-12);
    // Continuity correction: S − sign(S) = 0.
    assert_eq!((sk.z, sk.p_value), (0.0, 1.0));
    // Plain Mann–Kendall over the same points in time order compares unlike
    // hours too: (1, 3, 2, 2, 3, 2) gives S = 5 − 3 + 1 + 1 − 1 = 3.
    let plain = mann_kendall(&[1.0, 3.0, 2.0, 2.0, 3.0, 2.0]).unwrap();
    assert_eq!(plain.s, 3);
}

/// Hourly p50s (µs) of a stationary probe of the trends harness (±10–20 %
/// daily cycle, lognormal runs, one a minute) from 2026-11-25 00:00 UTC.
const HARNESS_STATIONARY: [u32; 74] = [
    92_159, 93_695, 90_623, 97_791, 102_911, 109_567, 108_543, 115_199, 111_615, 114_175, 120_319,
    114_687, 114_687, 112_639, 106_495, 110_591, 101_887, 102_399, 97_279, 92_671, 83_967, 80_383,
    84_479, 89_599, 91_135, 94_719, 96_767, 97_791, 100_863, 102_911, 107_007, 109_567, 110_591,
    112_127, 110_591, 114_175, 112_639, 114_687, 108_543, 102_911, 98_303, 97_279, 96_767, 90_623,
    90_623, 86_015, 87_039, 90_623, 90_111, 90_111, 91_135, 98_815, 96_255, 102_911, 103_423,
    110_591, 109_567, 110_591, 121_855, 114_175, 113_663, 112_127, 111_103, 110_079, 101_887,
    97_279, 93_695, 88_063, 88_063, 88_575, 83_967, 86_527, 90_623, 91_135,
];

#[test]
fn a_stationary_harness_series_is_no_drift_when_like_hours_are_compared() {
    let series: Vec<Point> = (HARNESS_STATIONARY.iter().enumerate())
        .map(|(h, v)| Point {
            at: 1_795_564_800.0 + h as f64 * HOUR_SECS,
            value: f64::from(*v),
        })
        .collect();
    // Mann–Kendall over the deseasonalised points, as the analysis first
    // did, calls it a drift: the profile came from the same 74 points.
    let flat = deseasonalise(&series).unwrap();
    let values: Vec<f64> = flat.iter().map(|p| p.value).collect();
    assert!(mann_kendall(&values).unwrap().p_value < 0.001);
    // The seasonal test does not.
    assert!(seasonal_kendall(&series).unwrap().p_value > 0.01);
    assert_eq!(detect(&series, &Config::default()).unwrap(), None);
}

#[test]
fn a_pure_daily_cycle_is_not_a_drift() {
    // 7.5 days, starting at 05:00: the half day would pass for a trend.
    for seed in 1..6 {
        let series = hourly(180, seed, diurnal);
        assert_eq!(detect(&series, &Config::default()).unwrap(), None);
        let flat = deseasonalise(&series).unwrap();
        let sd = |p: &[Point]| {
            let m = p.iter().map(|x| x.value).sum::<f64>() / p.len() as f64;
            (p.iter().map(|x| (x.value - m).powi(2)).sum::<f64>() / p.len() as f64).sqrt()
        };
        assert!(
            sd(&flat) < sd(&series) / 4.0,
            "{} vs {}",
            sd(&flat),
            sd(&series)
        );
        assert_eq!(flat.len(), series.len());
        assert_eq!(flat[7].at, series[7].at);
    }
}

#[test]
fn a_2_percent_a_day_drift_on_a_daily_cycle_is_found() {
    for seed in 11..16 {
        let series = hourly(7 * 24, seed, |at| {
            diurnal(at) * (1.0 + 0.02 * (at - START) / DAY_SECS)
        });
        let drift = detect(&series, &Config::default())
            .unwrap()
            .expect("a drift");
        assert!(
            (drift.relative_per_day - 0.02).abs() < 0.004,
            "seed {seed}: {}",
            drift.relative_per_day
        );
        assert!(drift.test.p_value < 1e-6 && drift.test.s > 0);
        assert!(
            (drift.per_day() - 2_000.0).abs() < 400.0,
            "{}",
            drift.per_day()
        );
        let said = format_per_day(drift.slope_per_second);
        assert!(
            said.starts_with("rising ") && said.ends_with(" ms/day"),
            "{said}"
        );
    }
}

#[test]
fn a_falling_drift_is_found_and_a_tiny_one_is_not_reported() {
    let down = hourly(14 * 24, 21, |at| {
        100_000.0 * (1.0 - 0.01 * (at - START) / DAY_SECS)
    });
    let drift = detect(&down, &Config::default()).unwrap().expect("a drift");
    assert!((drift.relative_per_day + 0.01).abs() < 0.002);
    // 0.1 % a day over 30 days is significant but under the 0.5 %/day floor.
    let tiny = hourly(30 * 24, 22, |at| {
        100_000.0 * (1.0 + 0.001 * (at - START) / DAY_SECS)
    });
    assert!(
        mann_kendall(&tiny.iter().map(|p| p.value).collect::<Vec<_>>())
            .unwrap()
            .p_value
            < 0.001
    );
    assert_eq!(detect(&tiny, &Config::default()).unwrap(), None);
}

#[test]
fn stationary_noise_has_no_drift_and_short_input_none() {
    for seed in 31..41 {
        let flat = hourly(30 * 24, seed, |_| 100_000.0);
        assert_eq!(
            detect(&flat, &Config::default()).unwrap(),
            None,
            "seed {seed}"
        );
    }
    assert_eq!(detect(&[], &Config::default()).unwrap(), None);
    let two = points(&[(0.0, 1.0), (3600.0, 2.0)]);
    assert_eq!(detect(&two, &Config::default()).unwrap(), None);
    let nan = points(&[(0.0, 1.0), (3600.0, f64::NAN)]);
    assert!(detect(&nan, &Config::default()).is_err());
    let many = vec![
        Point {
            at: 0.0,
            value: 1.0
        };
        MAX_POINTS + 1
    ];
    let too_many = TrendError::TooManyPoints {
        len: MAX_POINTS + 1,
        max: MAX_POINTS,
    };
    assert_eq!(detect(&many, &Config::default()), Err(too_many));
    assert_eq!(theil_sen(&many), Err(too_many));
    assert!(mann_kendall(&vec![1.0; MAX_POINTS + 1]).is_err());
}

#[test]
fn slopes_read_as_people_say_them() {
    assert_eq!(format_per_day(3_100.0 / DAY_SECS), "rising 3.1 ms/day");
    assert_eq!(format_per_day(-250.0 / DAY_SECS), "falling 250 µs/day");
    assert_eq!(format_per_day(2.5e6 / DAY_SECS), "rising 2.5 s/day");
    assert_eq!(format_per_day(0.0), "flat");
    assert_eq!(format_per_day(f64::NAN), "flat");
}

#[test]
fn a_rising_line_crosses_its_threshold_when_the_arithmetic_says() {
    // 600 ms now, rising 10 ms a day: 800 ms in 20 days.
    let per_day = 10_000.0 / DAY_SECS;
    let secs = crossing_after(600_000.0, per_day, 800_000.0, 90.0 * DAY_SECS).unwrap();
    assert!((secs / DAY_SECS - 20.0).abs() < 1e-9, "{secs}");
    assert_eq!(format_ahead(secs), "in about 20 days");
    assert_eq!(format_ahead(30.0 * 3_600.0), "in about 30 hours");
    assert_eq!(format_ahead(600.0), "within the hour");
    // Beyond the horizon, falling, flat, already above, or not a number: no forecast.
    assert_eq!(
        crossing_after(600_000.0, per_day, 800_000.0, 19.0 * DAY_SECS),
        None
    );
    assert_eq!(crossing_after(600_000.0, -per_day, 800_000.0, 1e9), None);
    assert_eq!(crossing_after(600_000.0, 0.0, 800_000.0, 1e9), None);
    assert_eq!(crossing_after(900_000.0, per_day, 800_000.0, 1e9), None);
    assert_eq!(crossing_after(f64::NAN, per_day, 800_000.0, 1e9), None);
}

#[test]
fn the_line_is_read_at_the_time_asked() {
    // y = 100 + 2·t with one outlier: the median intercept ignores it.
    let mut pts: Vec<Point> = (0..11)
        .map(|i| Point {
            at: f64::from(i),
            value: 100.0 + 2.0 * f64::from(i),
        })
        .collect();
    pts[3].value = 10_000.0;
    assert_eq!(line_at(&pts, 2.0, 10.0), Some(120.0));
    assert_eq!(line_at(&pts, 2.0, 0.0), Some(100.0));
    assert_eq!(line_at(&[], 2.0, 0.0), None);
}
