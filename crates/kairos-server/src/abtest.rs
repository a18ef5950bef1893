//! Statistics for campaign reports: rates with Wilson intervals, the two-proportion z-test of
//! a variant against its control, a confidence interval for the difference, and the
//! probability that the variant's true rate beats the control's (Beta posteriors with
//! uniform priors, compared through their normal approximation).

/// The standard normal CDF, through Abramowitz-Stegun 7.1.26 for erfc (|error| < 1.5e-7,
/// plenty for p-values shown to three places).
pub fn normal_cdf(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    let z = x.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erfc = poly * (-z * z).exp();
    if x >= 0.0 {
        1.0 - 0.5 * erfc
    } else {
        0.5 * erfc
    }
}

/// z for a two-sided 95% interval.
pub const Z95: f64 = 1.959_963_984_540_054;

/// A rate `successes / trials` with its 95% Wilson score interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub successes: u64,
    pub trials: u64,
    pub rate: f64,
    pub low: f64,
    pub high: f64,
}

impl Rate {
    pub fn new(successes: u64, trials: u64) -> Self {
        let successes = successes.min(trials);
        if trials == 0 {
            return Self {
                successes,
                trials,
                rate: 0.0,
                low: 0.0,
                high: 0.0,
            };
        }
        let n = trials as f64;
        let p = successes as f64 / n;
        let z2 = Z95 * Z95;
        let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
        let half = Z95 * ((p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt()) / (1.0 + z2 / n);
        Self {
            successes,
            trials,
            rate: p,
            low: (centre - half).max(0.0),
            high: (centre + half).min(1.0),
        }
    }
}

/// A variant's rate against its control's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Comparison {
    /// Variant rate minus control rate, with its 95% interval (unpooled standard error).
    pub difference: f64,
    pub low: f64,
    pub high: f64,
    /// Relative lift over the control rate (`None` when the control rate is 0).
    pub lift: Option<f64>,
    /// Two-proportion z-test (pooled), two-sided.
    pub z: f64,
    pub p_value: f64,
    /// P(variant's true rate > control's), Beta(1 + s, 1 + n - s) posteriors.
    pub probability_to_beat: f64,
}

pub fn compare(variant: &Rate, control: &Rate) -> Option<Comparison> {
    if variant.trials == 0 || control.trials == 0 {
        return None;
    }
    let (n1, n2) = (variant.trials as f64, control.trials as f64);
    let (p1, p2) = (variant.rate, control.rate);
    let difference = p1 - p2;
    let se = (p1 * (1.0 - p1) / n1 + p2 * (1.0 - p2) / n2).sqrt();
    let pooled = (variant.successes + control.successes) as f64 / (n1 + n2);
    let se_pooled = (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)).sqrt();
    let z = if se_pooled > 0.0 {
        difference / se_pooled
    } else {
        0.0
    };
    let p_value = (2.0 * (1.0 - normal_cdf(z.abs()))).clamp(0.0, 1.0);
    let beta = |s: u64, n: u64| {
        let (a, b) = (1.0 + s as f64, 1.0 + (n - s) as f64);
        let mean = a / (a + b);
        let var = a * b / ((a + b) * (a + b) * (a + b + 1.0));
        (mean, var)
    };
    let (m1, v1) = beta(variant.successes, variant.trials);
    let (m2, v2) = beta(control.successes, control.trials);
    let probability_to_beat = normal_cdf((m1 - m2) / (v1 + v2).sqrt());
    Some(Comparison {
        difference,
        low: difference - Z95 * se,
        high: difference + Z95 * se,
        lift: (p2 > 0.0).then(|| difference / p2),
        z,
        p_value,
        probability_to_beat,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() < tol
    }

    #[test]
    fn the_normal_cdf_matches_tables() {
        assert!(close(normal_cdf(0.0), 0.5, 1e-7));
        assert!(close(normal_cdf(Z95), 0.975, 1e-6));
        assert!(close(normal_cdf(-1.0), 0.158_655_25, 1e-6));
        assert!(close(normal_cdf(2.575_829), 0.995, 1e-6));
    }

    #[test]
    fn wilson_intervals_match_a_worked_example() {
        // 20 of 100: Wilson 95% interval is [0.1333, 0.2888].
        let r = Rate::new(20, 100);
        assert!(close(r.low, 0.1333, 1e-4), "{r:?}");
        assert!(close(r.high, 0.2888, 1e-4), "{r:?}");
        assert_eq!(Rate::new(0, 0).high, 0.0);
        assert!(
            close(Rate::new(0, 10).low, 0.0, 1e-12) && close(Rate::new(10, 10).high, 1.0, 1e-12)
        );
        // Wilson for 0 of 10: upper bound 0.2775.
        assert!(close(Rate::new(0, 10).high, 0.2775, 1e-4));
    }

    #[test]
    fn a_clear_difference_is_significant_and_an_equal_one_is_not() {
        // 120/1000 vs 100/1000: pooled p = 0.11, se = 0.013993, z = 1.4293, p = 0.1529.
        let c = compare(&Rate::new(120, 1000), &Rate::new(100, 1000)).unwrap_or_else(|| panic!());
        assert!(close(c.z, 1.4293, 1e-4), "{c:?}");
        assert!(close(c.p_value, 0.1529, 1e-4), "{c:?}");
        assert!(
            c.probability_to_beat > 0.9 && c.probability_to_beat < 0.95,
            "{c:?}"
        );
        assert!(close(c.lift.unwrap_or(0.0), 0.2, 1e-9));
        let strong =
            compare(&Rate::new(300, 2000), &Rate::new(200, 2000)).unwrap_or_else(|| panic!());
        assert!(strong.p_value < 0.001 && strong.low > 0.0, "{strong:?}");
        assert!(strong.probability_to_beat > 0.999);
        let same = compare(&Rate::new(50, 500), &Rate::new(50, 500)).unwrap_or_else(|| panic!());
        assert!(close(same.p_value, 1.0, 1e-6) && close(same.probability_to_beat, 0.5, 1e-6));
        assert!(compare(&Rate::new(1, 10), &Rate::new(0, 0)).is_none());
    }
}
