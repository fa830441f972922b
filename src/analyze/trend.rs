//! Least-squares trend of memory use, for the memory-leak probe.

use chrono::{DateTime, Utc};

/// Slope (units per hour) and coefficient of determination of `points` (time, value).
/// `None` with fewer than three points or no spread in time.
pub(crate) fn linear_trend(points: &[(DateTime<Utc>, f64)]) -> Option<(f64, f64)> {
    if points.len() < 3 {
        return None;
    }
    let t0 = points[0].0;
    let xs: Vec<f64> = points
        .iter()
        .map(|(t, _)| (*t - t0).num_milliseconds() as f64 / 3_600_000.0)
        .collect();
    let ys: Vec<f64> = points.iter().map(|(_, v)| *v).collect();
    let n = xs.len() as f64;
    let mean_x = xs.iter().sum::<f64>() / n;
    let mean_y = ys.iter().sum::<f64>() / n;
    let sxx: f64 = xs.iter().map(|x| (x - mean_x).powi(2)).sum();
    if sxx <= f64::EPSILON {
        return None;
    }
    let sxy: f64 = xs
        .iter()
        .zip(&ys)
        .map(|(x, y)| (x - mean_x) * (y - mean_y))
        .sum();
    let slope = sxy / sxx;
    let syy: f64 = ys.iter().map(|y| (y - mean_y).powi(2)).sum();
    let r2 = if syy <= f64::EPSILON {
        0.0
    } else {
        (sxy * sxy) / (sxx * syy)
    };
    Some((slope, r2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn series(values: &[f64], step_minutes: i64) -> Vec<(DateTime<Utc>, f64)> {
        let t0 = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap();
        values
            .iter()
            .enumerate()
            .map(|(i, v)| (t0 + Duration::minutes(step_minutes * i as i64), *v))
            .collect()
    }

    #[test]
    fn a_steady_climb_has_its_hourly_slope_and_a_tight_fit() {
        let (slope, r2) = linear_trend(&series(&[10.0, 15.0, 20.0, 25.0, 30.0], 15)).unwrap();
        assert!((slope - 20.0).abs() < 1e-9, "{slope}");
        assert!(r2 > 0.99);
    }

    #[test]
    fn noise_has_a_loose_fit_and_too_few_points_have_no_trend() {
        let (_, r2) = linear_trend(&series(&[10.0, 30.0, 5.0, 28.0, 9.0, 31.0], 5)).unwrap();
        assert!(r2 < 0.5, "{r2}");
        assert!(linear_trend(&series(&[1.0, 2.0], 5)).is_none());
    }
}
