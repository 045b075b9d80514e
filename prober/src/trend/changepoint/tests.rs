//! Scenarios for the change-point detector on deterministic noisy series.

use super::*;
use crate::trend::noise::Noise;

/// Latency-like points around 100 ms (in µs) with 5 % lognormal noise,
/// multiplied by `factor(i)` from index `i`.
fn series(seed: u64, len: usize, factor: impl Fn(usize) -> f64) -> Vec<f64> {
    let mut noise = Noise::new(seed);
    (0..len)
        .map(|i| noise.latency(100_000.0, 0.05) * factor(i))
        .collect()
}

fn indexes(points: &[ChangePoint]) -> Vec<usize> {
    points.iter().map(|p| p.index).collect()
}

fn assert_near(found: &[usize], want: &[usize], slack: usize) {
    assert_eq!(found.len(), want.len(), "found {found:?}, want {want:?}");
    for (f, w) in found.iter().zip(want) {
        assert!(f.abs_diff(*w) <= slack, "found {found:?}, want {want:?}");
    }
}

#[test]
fn steps_of_10_20_and_50_percent_are_found_where_they_happen() {
    for (seed, step) in [(11, 1.10), (12, 1.20), (13, 1.50)] {
        for at in [37, 90, 121] {
            let s = series(seed, 160, |i| if i >= at { step } else { 1.0 });
            let found = detect(&s, &Config::default()).unwrap();
            assert_near(&indexes(&found), &[at], 2);
            let rel = found[0].relative_change();
            assert!((rel - (step - 1.0)).abs() < 0.03, "step {step}: {rel}");
            assert!(found[0].p_value < 0.001);
        }
    }
}

#[test]
fn several_steps_in_one_series_are_each_found() {
    let factor = |i: usize| match i {
        0..60 => 1.0,
        60..120 => 1.2,
        120..180 => 1.1,
        _ => 1.6,
    };
    let s = series(21, 240, factor);
    let found = detect(&s, &Config::default()).unwrap();
    assert_near(&indexes(&found), &[60, 120, 180], 2);
    assert_eq!(found[1].before.start, found[0].index);
    assert_eq!(found[1].after.end, found[2].index);
}

#[test]
fn a_doubling_of_spread_with_the_same_mean_is_found_with_long_windows() {
    // A change of spread alone needs about 100 points a side: windows of 200.
    let config = Config {
        window_len: 200,
        ..Config::default()
    };
    for seed in 31..37 {
        let mut noise = Noise::new(seed);
        let s: Vec<f64> = (0..400)
            .map(|i| {
                let sd = if i >= 200 { 10_000.0 } else { 5_000.0 };
                100_000.0 + sd * noise.normal()
            })
            .collect();
        let found = detect(&s, &config).unwrap();
        assert_near(&indexes(&found), &[200], 20);
        assert!(found[0].relative_change().abs() < 0.02);
        assert!(found[0].after.std_dev > 1.5 * found[0].before.std_dev);
    }
}

#[test]
fn single_huge_outliers_in_stationary_noise_are_not_change_points() {
    for seed in [41, 42, 43] {
        let s = series(seed, 600, |i| if i % 37 == 5 { 10.0 } else { 1.0 });
        let found = detect(&s, &Config::default()).unwrap();
        assert!(found.is_empty(), "seed {seed}: {:?}", indexes(&found));
    }
}

#[test]
fn stationary_noise_yields_no_change_point() {
    // 20,000 points in all (14 days at one a minute).
    for seed in 100..120 {
        let found = detect(&series(seed, 1_000, |_| 1.0), &Config::default()).unwrap();
        assert!(found.is_empty(), "seed {seed}: {:?}", indexes(&found));
    }
}

#[test]
fn a_step_needs_at_least_min_segment_points_after_it() {
    let mut s = series(61, 60, |_| 1.0);
    s.extend([200_000.0; 4]);
    assert!(detect(&s, &Config::default()).unwrap().is_empty());
    s.extend([200_000.0; 4]);
    assert_eq!(indexes(&detect(&s, &Config::default()).unwrap()), [60]);
}

#[test]
fn outliers_add_no_change_point_to_noise_with_a_step() {
    for seed in 91..96 {
        let clean = series(seed, 300, |i| if i >= 150 { 1.2 } else { 1.0 });
        let mut dirty = clean.clone();
        for i in (7..300).step_by(29) {
            dirty[i] *= 10.0;
        }
        let want = indexes(&detect(&clean, &Config::default()).unwrap());
        let got = indexes(&detect(&dirty, &Config::default()).unwrap());
        // The step survives the outliers, and every point found with them is
        // one found without them (outliers may mask, never add).
        assert!(
            got.iter().any(|i| i.abs_diff(150) <= 2),
            "seed {seed}: {got:?}"
        );
        assert!(
            got.iter().all(|i| want.contains(i)),
            "seed {seed}: {got:?} vs {want:?}"
        );
    }
}

#[test]
fn min_magnitude_merges_small_steps_away() {
    let s = series(71, 200, |i| match i {
        0..100 => 1.0,
        100..150 => 1.1,
        _ => 1.6,
    });
    let all = detect(&s, &Config::default()).unwrap();
    assert_near(&indexes(&all), &[100, 150], 2);
    let config = Config {
        min_magnitude: 0.2,
        ..Config::default()
    };
    let big = detect(&s, &config).unwrap();
    assert_near(&indexes(&big), &[150], 2);
    // Re-tested against its new neighbours: the segment before starts at 0.
    assert_eq!(big[0].before.start, 0);
}

#[test]
fn short_empty_and_constant_series_yield_nothing() {
    let config = Config::default();
    assert!(detect(&[], &config).unwrap().is_empty());
    assert!(detect(&[1.0; 9], &config).unwrap().is_empty());
    assert!(detect(&[7.0; 300], &config).unwrap().is_empty());
    let odd = Config {
        window_len: 0,
        max_pvalue: -1.0,
        min_magnitude: f64::NAN,
        min_segment: 0,
    };
    assert!(detect(&[1.0, 2.0, 3.0], &odd).unwrap().is_empty());
    // Absurd sizes are clamped, not allocated or overflowed.
    let huge = Config {
        window_len: usize::MAX,
        min_segment: usize::MAX,
        ..Config::default()
    };
    let s = series(1, 2_000, |i| if i >= 1_000 { 2.0 } else { 1.0 });
    assert_eq!(indexes(&detect(&s, &huge).unwrap()), [1_000]);
}

#[test]
fn a_constant_series_with_one_clean_step_is_found() {
    let mut s = vec![5.0; 40];
    s.extend([9.0; 40]);
    let found = detect(&s, &Config::default()).unwrap();
    assert_eq!(indexes(&found), [40]);
    assert_eq!(found[0].p_value, 0.0);
}

#[test]
fn non_finite_values_are_rejected_with_their_index() {
    let mut s = vec![1.0; 20];
    s[13] = f64::NAN;
    assert_eq!(
        detect(&s, &Config::default()),
        Err(TrendError::NotFinite { index: 13 })
    );
    s[13] = f64::INFINITY;
    assert!(detect(&s, &Config::default()).is_err());
}

#[test]
fn appending_points_one_by_one_equals_analysing_the_whole_series() {
    let s = series(81, 260, |i| match i {
        0..70 => 1.0,
        70..150 => 1.15,
        150..200 => 1.5,
        _ => 1.2,
    });
    let config = Config::default();
    let mut inc = Incremental::new(&config);
    for (n, v) in s.iter().enumerate() {
        inc.push(*v).unwrap();
        let batch = detect(&s[..=n], &config).unwrap();
        assert_eq!(inc.change_points(), &batch[..], "after {} points", n + 1);
    }
    assert_near(&indexes(inc.change_points()), &[70, 150, 200], 2);
    assert_eq!(inc.series(), &s[..]);
}

#[test]
fn appending_in_batches_equals_the_whole_series_and_rejects_nan_whole() {
    let s = series(82, 300, |i| if i >= 170 { 1.3 } else { 1.0 });
    let config = Config::default();
    let mut inc = Incremental::new(&config);
    for chunk in s.chunks(17) {
        inc.extend(chunk).unwrap();
    }
    assert_eq!(inc.change_points(), &detect(&s, &config).unwrap()[..]);
    assert_eq!(
        inc.extend(&[1.0, f64::NAN]),
        Err(TrendError::NotFinite { index: 1 })
    );
    assert_eq!(inc.series().len(), 300);
    // Full windows are kept: far fewer than one window per appended point.
    assert!(inc.windows_analysed() <= 300 / 25 + 2);
}
