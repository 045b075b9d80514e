//! The energy statistic of E-divisive means (Matteson & James 2014, α = 1).
//!
//! For a split of `Z[s..κ)` at τ into X = `Z[s..τ)` and Y = `Z[τ..κ)`:
//!
//! ```text
//! Ê(X,Y) = 2/(|X||Y|) Σ_{X×Y} |Zi − Zj| − C(|X|,2)⁻¹ Σ_{i<j∈X} |Zi − Zj| − C(|Y|,2)⁻¹ Σ_{i<j∈Y} |Zi − Zj|
//! Q̂(X,Y) = |X||Y| / (|X|+|Y|) · Ê(X,Y)
//! ```
//!
//! Naively each Q̂ costs O(n²) and there are O(n²) pairs (τ, κ). [`Energy`]
//! keeps two-dimensional prefix sums of the distance matrix, so each of the
//! three sums is a rectangle read in O(1): O(n²) to build per window, O(n²)
//! for every (τ, κ) of a segment.

/// Q̂(X, Y) straight from the definition; the reference the fast table is
/// tested against. 0 when either side is empty. A one-point side has no
/// pairs, so its within term is 0.
pub fn q_hat(x: &[f64], y: &[f64]) -> f64 {
    if x.is_empty() || y.is_empty() {
        return 0.0;
    }
    let (n, m) = (x.len() as f64, y.len() as f64);
    let cross: f64 = x
        .iter()
        .map(|a| y.iter().map(|b| (a - b).abs()).sum::<f64>())
        .sum();
    let within = |s: &[f64]| -> f64 {
        let k = s.len() as f64;
        if s.len() < 2 {
            return 0.0;
        }
        let sum: f64 = (0..s.len())
            .flat_map(|i| (i + 1..s.len()).map(move |j| (i, j)))
            .map(|(i, j)| (s[i] - s[j]).abs())
            .sum();
        sum / (k * (k - 1.0) / 2.0)
    };
    let e = 2.0 * cross / (n * m) - within(x) - within(y);
    n * m / (n + m) * e
}

/// Prefix sums of `|Zi − Zj|` over one window.
pub(super) struct Energy {
    width: usize,
    /// `prefix[i * width + j]` = Σ_{a<i, b<j} |Za − Zb|.
    prefix: Vec<f64>,
}

impl Energy {
    pub(super) fn new(z: &[f64]) -> Self {
        let width = z.len() + 1;
        let mut prefix = vec![0.0; width * width];
        // Row i + 1 is row i plus the running sum of |Zi − Zb| over b: one
        // read of the row above per cell (the table is built for every
        // window of every scan, the screen's each pass: with three reads a
        // cell it was a third of the change-point test's time).
        for (i, &zi) in z.iter().enumerate() {
            let (done, rest) = prefix.split_at_mut((i + 1) * width);
            let (above, row) = (&done[i * width..], &mut rest[..width]);
            let mut run = 0.0;
            for ((cell, &up), &zb) in row[1..].iter_mut().zip(&above[1..]).zip(z) {
                run += (zi - zb).abs();
                *cell = up + run;
            }
        }
        Energy { width, prefix }
    }

    /// Σ |Za − Zb| over rows `r` and columns `c`.
    fn rect(&self, r: (usize, usize), c: (usize, usize)) -> f64 {
        let at = |i: usize, j: usize| self.prefix[i * self.width + j];
        at(r.1, c.1) - at(r.0, c.1) - at(r.1, c.0) + at(r.0, c.0)
    }

    /// Q̂ of `Z[s..tau)` against `Z[tau..kappa)`; requires `s < tau < kappa ≤ len`.
    pub(super) fn q(&self, s: usize, tau: usize, kappa: usize) -> f64 {
        let (n, m) = ((tau - s) as f64, (kappa - tau) as f64);
        let cross = self.rect((s, tau), (tau, kappa));
        let within = |a: usize, b: usize| -> f64 {
            let k = (b - a) as f64;
            if b - a < 2 {
                return 0.0;
            }
            // The square counts each pair twice.
            self.rect((a, b), (a, b)) / 2.0 / (k * (k - 1.0) / 2.0)
        };
        let e = 2.0 * cross / (n * m) - within(s, tau) - within(tau, kappa);
        n * m / (n + m) * e
    }

    /// The split τ of `Z[s..e)` maximising Q̂ over τ and κ (κ ≤ e), with at
    /// least `min_len` points on each side; the first one on ties. `None` when
    /// the segment is too short.
    pub(super) fn best_split(&self, s: usize, e: usize, min_len: usize) -> Option<(usize, f64)> {
        let min_len = min_len.max(1);
        let mut best: Option<(usize, f64)> = None;
        for tau in s + min_len..=e.saturating_sub(min_len) {
            for kappa in tau + min_len..=e {
                let q = self.q(s, tau, kappa);
                if best.is_none_or(|(_, b)| q > b) {
                    best = Some((tau, q));
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trend::noise::Noise;

    #[test]
    fn q_hat_of_two_constant_halves_by_hand() {
        // X = [0, 0], Y = [2, 2]: the 4 cross pairs are each 2 apart, so
        // Ê = 2/(2·2)·8 − 0 − 0 = 4 and Q̂ = 2·2/4 · 4 = 4.
        assert_eq!(q_hat(&[0.0, 0.0], &[2.0, 2.0]), 4.0);
    }

    #[test]
    fn q_hat_with_a_one_point_side_by_hand() {
        // X = [1, 2, 3], Y = [6]: cross = 5 + 4 + 3 = 12, 2/(3·1)·12 = 8;
        // within X: (1 + 2 + 1) / C(3,2) = 4/3; Y has no pairs.
        // Ê = 8 − 4/3 = 20/3, Q̂ = 3·1/4 · 20/3 = 5.
        assert!((q_hat(&[1.0, 2.0, 3.0], &[6.0]) - 5.0).abs() < 1e-12);
    }

    #[test]
    fn q_hat_is_negative_for_identical_samples_and_zero_for_an_empty_side() {
        // X = Y = [1, 3]: cross = 0 + 2 + 2 + 0 = 4, 2/(2·2)·4 = 2; each
        // within term is 2 / C(2,2) = 2. Ê = 2 − 2 − 2 = −2, Q̂ = 2·2/4 · −2 = −2:
        // the unbiased within terms make alike samples score below zero.
        assert_eq!(q_hat(&[1.0, 3.0], &[1.0, 3.0]), -2.0);
        assert_eq!(q_hat(&[], &[1.0]), 0.0);
    }

    #[test]
    fn the_prefix_table_equals_the_definition_for_every_split() {
        let mut noise = Noise::new(3);
        let z: Vec<f64> = (0..23).map(|i| noise.normal() + (i / 12) as f64).collect();
        let energy = Energy::new(&z);
        for s in [0, 4] {
            for tau in s + 1..z.len() {
                for kappa in tau + 1..=z.len() {
                    let want = q_hat(&z[s..tau], &z[tau..kappa]);
                    let got = energy.q(s, tau, kappa);
                    assert!((want - got).abs() < 1e-9, "s={s} τ={tau} κ={kappa}");
                }
            }
        }
    }

    #[test]
    fn best_split_finds_the_step_and_respects_the_minimum_side() {
        let z = [1.0, 1.1, 0.9, 1.0, 1.05, 3.0, 3.1, 2.9, 3.0, 3.05];
        let energy = Energy::new(&z);
        assert_eq!(energy.best_split(0, z.len(), 2).map(|b| b.0), Some(5));
        // A side of at least 6 points on each side cannot fit in 10.
        assert_eq!(energy.best_split(0, z.len(), 6), None);
        assert_eq!(energy.best_split(3, 4, 1), None);
    }
}
