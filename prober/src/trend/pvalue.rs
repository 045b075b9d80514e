//! Two-sided p-values from the normal and Student-t distributions (`statrs`
//! computes the CDFs; the survival function keeps precision in the far tail).

use statrs::distribution::{ContinuousCDF, Normal, StudentsT};

/// P(|Z| ≥ |z|) for a standard normal Z; 1 when `z` is NaN.
pub fn normal_two_sided(z: f64) -> f64 {
    if z.is_nan() {
        return 1.0;
    }
    match Normal::new(0.0, 1.0) {
        Ok(n) => (2.0 * n.sf(z.abs())).min(1.0),
        Err(_) => 1.0,
    }
}

/// The standard normal quantile Φ⁻¹(q) for q in (0, 1); ±∞ at the ends.
pub fn normal_quantile(q: f64) -> f64 {
    match Normal::new(0.0, 1.0) {
        Ok(n) => n.inverse_cdf(q.clamp(0.0, 1.0)),
        Err(_) => 0.0,
    }
}

/// P(|T| ≥ |t|) for Student's t with `df` degrees of freedom; 1 when `t` is
/// NaN or `df` is not positive.
pub fn student_t_two_sided(t: f64, df: f64) -> f64 {
    if t.is_nan() || df.is_nan() || df <= 0.0 {
        return 1.0;
    }
    match StudentsT::new(0.0, 1.0, df) {
        Ok(d) => (2.0 * d.sf(t.abs())).min(1.0),
        Err(_) => 1.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_two_sided_matches_tables() {
        assert!((normal_two_sided(0.0) - 1.0).abs() < 1e-12);
        assert!((normal_two_sided(1.959_963_985) - 0.05).abs() < 1e-8);
        assert!((normal_two_sided(-2.575_829_304) - 0.01).abs() < 1e-8);
        // Far tail: no cancellation to 0.
        let p = normal_two_sided(10.0);
        assert!(p > 1e-24 && p < 1e-22, "{p}");
        assert_eq!(normal_two_sided(f64::NAN), 1.0);
    }

    #[test]
    fn normal_quantile_inverts_the_cdf() {
        assert!((normal_quantile(0.975) - 1.959_963_985).abs() < 1e-8);
        assert_eq!(normal_quantile(0.5), 0.0);
        assert_eq!(normal_quantile(1.0), f64::INFINITY);
        assert_eq!(normal_quantile(2.0), f64::INFINITY);
    }

    #[test]
    fn student_t_two_sided_matches_tables() {
        // t_{0.975, 10} = 2.228139; t_{0.995, 30} = 2.749996.
        assert!((student_t_two_sided(2.228_139, 10.0) - 0.05).abs() < 1e-6);
        assert!((student_t_two_sided(-2.749_996, 30.0) - 0.01).abs() < 1e-6);
        assert_eq!(student_t_two_sided(1.0, 0.0), 1.0);
        assert_eq!(student_t_two_sided(f64::NAN, 5.0), 1.0);
        assert!(student_t_two_sided(f64::INFINITY, 5.0) < 1e-12);
    }
}
