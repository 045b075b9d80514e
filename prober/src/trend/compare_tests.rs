//! Mann–Whitney, Hodges–Lehmann and medians from bins against the same
//! statistics on the raw samples the bins stand for; the effect floor.

use super::*;
use crate::trend::noise::Noise;

fn bins(pairs: &[(u64, u64)]) -> Vec<Bin> {
    pairs
        .iter()
        .map(|&(value, count)| Bin { value, count })
        .collect()
}

fn expand(bins: &[Bin]) -> Vec<f64> {
    bins.iter()
        .flat_map(|b| std::iter::repeat_n(b.value as f64, b.count as usize))
        .collect()
}

/// Mann–Whitney the textbook way: midranks of the pooled raw samples,
/// U_A = R_A − n_A(n_A + 1)/2, tie groups counted on the sorted pool.
fn raw_mann_whitney(a: &[f64], b: &[f64]) -> (f64, f64, f64) {
    let mut pool: Vec<(f64, bool)> = a.iter().map(|&v| (v, true)).collect();
    pool.extend(b.iter().map(|&v| (v, false)));
    pool.sort_by(|x, y| x.0.total_cmp(&y.0));
    let (mut rank_a, mut ties, mut i) = (0.0, 0.0, 0);
    while i < pool.len() {
        let j = i + pool[i..].iter().take_while(|p| p.0 == pool[i].0).count();
        let midrank = (i + 1 + j) as f64 / 2.0;
        rank_a += midrank * pool[i..j].iter().filter(|p| p.1).count() as f64;
        let t = (j - i) as f64;
        ties += t * t * t - t;
        i = j;
    }
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let n = na + nb;
    let u = rank_a - na * (na + 1.0) / 2.0;
    let var = na * nb / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)));
    let d = u - na * nb / 2.0;
    let z = (d - 0.5 * d.signum()) / var.sqrt();
    (u, z, crate::trend::pvalue::normal_two_sided(z))
}

fn raw_median(values: &[f64]) -> f64 {
    crate::trend::median_in_place(&mut values.to_vec()).unwrap()
}

fn raw_hodges_lehmann(a: &[f64], b: &[f64]) -> f64 {
    let d: Vec<f64> = a
        .iter()
        .flat_map(|x| b.iter().map(move |y| x - y))
        .collect();
    raw_median(&d)
}

/// Random-ish histograms with collisions between the two sides' bins.
fn random_bins(noise: &mut Noise, shift: u64) -> Vec<Bin> {
    let n = 3 + (noise.uniform() * 12.0) as usize;
    (0..n)
        .map(|_| Bin {
            value: 100 + shift + 10 * (noise.uniform() * 15.0) as u64,
            count: 1 + (noise.uniform() * 20.0) as u64,
        })
        .collect()
}

#[test]
fn mann_whitney_from_bins_by_hand() {
    // A = [1, 2, 3], B = [2, 4]: A above B in (3, 2); (2, 2) ties: U_A = 1.5.
    // Ties: one group of 2 → 6. σ² = 3·2/12 · (6 − 6/(5·4)) = 2.85;
    // z = (1.5 − 3 + 0.5)/√2.85 = −0.592349.
    let mw = mann_whitney(&bins(&[(1, 1), (2, 1), (3, 1)]), &bins(&[(4, 1), (2, 1)])).unwrap();
    assert_eq!((mw.n_a, mw.n_b, mw.u, mw.cles), (3, 2, 1.5, 0.25));
    assert!((mw.z + 0.592_348_878).abs() < 1e-8, "{}", mw.z);
}

#[test]
fn mann_whitney_from_bins_equals_the_raw_samples() {
    let mut noise = Noise::new(5);
    for case in 0..12 {
        let a = random_bins(&mut noise, 0);
        let b = random_bins(&mut noise, if case % 3 == 0 { 0 } else { 20 * case });
        let got = mann_whitney(&a, &b).unwrap();
        let (u, z, p) = raw_mann_whitney(&expand(&a), &expand(&b));
        assert!((got.u - u).abs() < 1e-9, "case {case}: U {} vs {u}", got.u);
        assert!((got.z - z).abs() < 1e-9, "case {case}: z {} vs {z}", got.z);
        assert!((got.p_value - p).abs() < 1e-12, "case {case}");
        assert_eq!(got.n_a as usize, expand(&a).len());
    }
}

#[test]
fn hodges_lehmann_and_medians_from_bins_equal_the_raw_samples() {
    let mut noise = Noise::new(6);
    for case in 0..12 {
        let a = random_bins(&mut noise, 7 * case);
        let b = random_bins(&mut noise, 0);
        let (ra, rb) = (expand(&a), expand(&b));
        assert_eq!(
            hodges_lehmann(&a, &b),
            Some(raw_hodges_lehmann(&ra, &rb)),
            "case {case}"
        );
        assert_eq!(median(&a), Some(raw_median(&ra)), "case {case}");
    }
    // Even counts: the mean of the two middle values.
    assert_eq!(median(&bins(&[(10, 1), (20, 1)])), Some(15.0));
    assert_eq!(
        hodges_lehmann(&bins(&[(10, 1), (20, 1)]), &bins(&[(0, 1)])),
        Some(15.0)
    );
}

#[test]
fn unsorted_duplicate_and_empty_bins_are_merged() {
    let messy = bins(&[(30, 2), (10, 1), (30, 1), (20, 0), (10, 2)]);
    let clean = bins(&[(10, 3), (30, 3)]);
    let other = bins(&[(20, 4)]);
    assert_eq!(mann_whitney(&messy, &other), mann_whitney(&clean, &other));
    assert_eq!(
        hodges_lehmann(&messy, &other),
        hodges_lehmann(&clean, &other)
    );
    assert_eq!(median(&messy), Some(20.0));
}

#[test]
fn empty_sides_and_all_ties_give_no_result_or_no_difference() {
    assert_eq!(mann_whitney(&[], &bins(&[(1, 1)])), None);
    assert_eq!(mann_whitney(&bins(&[(1, 0)]), &bins(&[(1, 1)])), None);
    assert_eq!(hodges_lehmann(&bins(&[(1, 1)]), &[]), None);
    assert_eq!(median(&[]), None);
    assert_eq!(confirm(&[], &bins(&[(1, 1)]), &Floor::default()), None);
    let same = mann_whitney(&bins(&[(5, 10)]), &bins(&[(5, 7)])).unwrap();
    assert_eq!((same.z, same.p_value, same.cles), (0.0, 1.0, 0.5));
}

/// A bell of bins around `centre` µs, 100 µs apart, with `scale` samples in the middle one.
fn bell(centre: u64, scale: u64) -> Vec<Bin> {
    (0..21u64)
        .map(|i| Bin {
            value: centre - 1_000 + 100 * i,
            count: scale * (11 - i.abs_diff(10)),
        })
        .collect()
}

#[test]
fn a_huge_sample_never_turns_a_tenth_of_a_millisecond_into_a_finding() {
    // ~1.2 million runs a side around 10 ms; after is 0.1 ms slower.
    let (before, after) = (bell(10_000, 10_000), bell(10_100, 10_000));
    let c = confirm(&before, &after, &Floor::default()).unwrap();
    assert!(c.test.p_value < 1e-100, "{}", c.test.p_value);
    assert_eq!(c.shift_us, 100.0);
    assert_eq!(c.verdict, Verdict::BelowFloor);
    assert!(!c.confirmed());
}

#[test]
fn a_two_millisecond_step_on_ten_is_confirmed() {
    let c = confirm(&bell(10_000, 50), &bell(12_000, 50), &Floor::default()).unwrap();
    assert_eq!(c.verdict, Verdict::Confirmed);
    assert_eq!(
        (c.median_before, c.median_after, c.shift_us),
        (10_000.0, 12_000.0, 2_000.0)
    );
    assert!((c.relative_shift - 0.2).abs() < 1e-12);
    assert!(c.test.cles > 0.9);
    // Faster is a change too.
    let faster = confirm(&bell(12_000, 50), &bell(10_000, 50), &Floor::default()).unwrap();
    assert_eq!(
        (faster.verdict, faster.shift_us),
        (Verdict::Confirmed, -2_000.0)
    );
}

#[test]
fn the_relative_floor_holds_on_slow_probes_and_few_samples_are_not_significant() {
    // 2 ms on 100 ms: above 1 ms but under 5 %.
    let slow = confirm(&bell(100_000, 50), &bell(102_000, 50), &Floor::default()).unwrap();
    assert_eq!(slow.verdict, Verdict::BelowFloor);
    let lenient = Floor {
        min_relative: 0.01,
        ..Floor::default()
    };
    assert!(confirm(&bell(100_000, 50), &bell(102_000, 50), &lenient)
        .unwrap()
        .confirmed());
    // Three runs a side: a big shift, but no evidence.
    let few = confirm(
        &bins(&[(10_000, 3)]),
        &bins(&[(20_000, 3)]),
        &Floor::default(),
    )
    .unwrap();
    assert_eq!(few.verdict, Verdict::NotSignificant);
}
