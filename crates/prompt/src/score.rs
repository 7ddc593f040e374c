//! Grading what the model answers: open-ended exact match (the paper's metric), a constrained
//! choice among the class names, calibration, and accuracy with its interval.

use crate::{parse_answer, PromptError, Result};

/// Open-ended scoring of Frozen: the text before the first period or newline, case-folded, must
/// equal the class name. (ours) Trailing `!?,;:` and quotes are dropped from both sides first, so
/// "Lion!" counts; extra words ("lion cub") never do.
pub fn exact_match(continuation: &str, class_name: &str) -> bool {
    let strip = |s: &str| {
        s.trim()
            .trim_end_matches(['!', '?', ',', ';', ':', '"', '\'', '.'])
            .trim()
            .to_lowercase()
    };
    let answer = strip(&parse_answer(continuation));
    !answer.is_empty() && answer == strip(class_name)
}

/// Index of the best class score (per-class log-probabilities of the class names). NaN scores
/// never win; ties go to the first class.
pub fn constrained_choice(scores: &[f32]) -> Result<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &s) in scores.iter().enumerate() {
        if s.is_nan() {
            continue;
        }
        if best.is_none_or(|(_, b)| s > b) {
            best = Some((i, s));
        }
    }
    match best {
        Some((i, _)) => Ok(i),
        None if scores.is_empty() => Err(PromptError::EmptyScores),
        // Every score NaN: no information, fall back to the first class.
        None => Ok(0),
    }
}

/// log(sum(exp(xs))), stable.
fn log_sum_exp(xs: &[f32]) -> f32 {
    let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return max;
    }
    max + xs.iter().map(|x| (x - max).exp()).sum::<f32>().ln()
}

/// Contextual calibration (Zhao et al. 2021, "Calibrate Before Use", section 4): divide each
/// class probability by the probability the same prompt gives it with a content-free query
/// (e.g. "N/A"), then renormalise. Inputs are log-probabilities (any normalisation); the result
/// is normalised log-probabilities. A class the content-free prompt gives probability 0 is left
/// unscaled rather than sent to infinity.
pub fn calibrate(logprobs: &[f32], content_free_logprobs: &[f32]) -> Result<Vec<f32>> {
    if logprobs.len() != content_free_logprobs.len() {
        return Err(PromptError::LengthMismatch {
            scores: logprobs.len(),
            content_free: content_free_logprobs.len(),
        });
    }
    if logprobs.is_empty() {
        return Err(PromptError::EmptyScores);
    }
    // Normalise the content-free distribution over the classes first (W = diag(p_cf)^-1).
    let cf_norm = log_sum_exp(content_free_logprobs);
    let shifted: Vec<f32> = logprobs
        .iter()
        .zip(content_free_logprobs)
        .map(|(&l, &c)| {
            let c = c - cf_norm;
            if c.is_finite() {
                l - c
            } else {
                l
            }
        })
        .collect();
    let norm = log_sum_exp(&shifted);
    Ok(shifted.iter().map(|x| x - norm).collect())
}

/// Accuracy and its 95% Wilson score interval (Wilson 1927): `(accuracy, low, high)`. With no
/// items, accuracy 0 and the interval (0, 1).
pub fn accuracy_with_interval(correct: &[bool]) -> (f64, f64, f64) {
    const Z: f64 = 1.959_963_984_540_054; // two-sided 95% normal quantile
    let n = correct.len() as f64;
    if correct.is_empty() {
        return (0.0, 0.0, 1.0);
    }
    let p = correct.iter().filter(|&&c| c).count() as f64 / n;
    let z2 = Z * Z;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = Z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denom;
    (p, (centre - half).max(0.0), (centre + half).min(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Calibration is about a dozen f32 roundings (exp and ln within an ulp each, additions
    /// and subtractions) of log-probabilities of magnitude up to ~5: at most 12 * 5 * 2^-24 ~
    /// 4e-6 in a log-probability, and as much relative in a probability. 1e-5 covers that.
    const CAL_TOL: f32 = 1e-5;

    /// The Wilson references are given to 4 decimals: half a unit of the last, 5e-5 (f64
    /// arithmetic adds ~1e-16).
    const WILSON_TOL: f64 = 5e-5;

    #[test]
    fn exact_match_edge_cases() {
        assert!(exact_match(" lion.", "lion"));
        assert!(exact_match(" Lion. This is a vase.", "lion"));
        assert!(exact_match(" LION\nvase", "Lion"));
        assert!(exact_match(" lion!", "lion"));
        assert!(!exact_match(" lion, I think", "lion"));
        assert!(!exact_match(" lion cub.", "lion"));
        assert!(!exact_match(" a lion.", "lion"));
        assert!(!exact_match("", "lion"));
        assert!(!exact_match("...", "lion"));
        assert!(!exact_match(" \u{fffd}#@!", "lion"));
        assert!(!exact_match("", ""));
        assert!(exact_match(" ice cream.", "ice cream"));
        assert!(exact_match(" Ice  cream", "ice  cream"));
    }

    #[test]
    fn constrained_choice_is_the_argmax() {
        assert_eq!(constrained_choice(&[-3.0, -0.5, -2.0]).unwrap(), 1);
        assert_eq!(constrained_choice(&[-1.0, -1.0]).unwrap(), 0);
        assert_eq!(constrained_choice(&[f32::NAN, -9.0]).unwrap(), 1);
        assert_eq!(constrained_choice(&[f32::NEG_INFINITY, -9.0]).unwrap(), 1);
        assert!(matches!(
            constrained_choice(&[]),
            Err(PromptError::EmptyScores)
        ));
    }

    #[test]
    fn calibration_flips_a_biased_choice() {
        // The model favours the first label whatever the image: with "N/A" as the query it gives
        // class 0 probability 0.8. On this query it gives 0.6 / 0.4: raw argmax is class 0, but
        // relative to the bias class 1 gained (0.4 / 0.2 = 2 against 0.6 / 0.8 = 0.75).
        let raw = [0.6f32.ln(), 0.4f32.ln()];
        let cf = [0.8f32.ln(), 0.2f32.ln()];
        assert_eq!(constrained_choice(&raw).unwrap(), 0);
        let cal = calibrate(&raw, &cf).unwrap();
        assert_eq!(constrained_choice(&cal).unwrap(), 1);
        let total: f32 = cal.iter().map(|x| x.exp()).sum();
        assert!((total - 1.0).abs() < CAL_TOL, "{total}");
        // 0.75 : 2 -> 0.2727 : 0.7273
        assert!((cal[1].exp() - 2.0 / 2.75).abs() < CAL_TOL, "{cal:?}");
    }

    #[test]
    fn calibration_with_a_uniform_content_free_prompt_changes_nothing() {
        let raw = [-0.2f32, -2.0, -3.5];
        let cal = calibrate(&raw, &[-1.0, -1.0, -1.0]).unwrap();
        let norm = log_sum_exp(&raw);
        for (c, r) in cal.iter().zip(raw) {
            assert!((c - (r - norm)).abs() < CAL_TOL);
        }
        assert!(matches!(
            calibrate(&raw, &[0.0]),
            Err(PromptError::LengthMismatch {
                scores: 3,
                content_free: 1
            })
        ));
    }

    #[test]
    fn wilson_interval_known_values() {
        let half: Vec<bool> = (0..100).map(|i| i % 2 == 0).collect();
        let (acc, lo, hi) = accuracy_with_interval(&half);
        // k / n is one correctly rounded division: exactly the literal.
        assert_eq!(acc, 0.5);
        assert!((lo - 0.4038).abs() < WILSON_TOL, "{lo}");
        assert!((hi - 0.5962).abs() < WILSON_TOL, "{hi}");
        // 0 of 10: (0, 0.2775)
        let (acc, lo, hi) = accuracy_with_interval(&[false; 10]);
        assert_eq!((acc, lo), (0.0, 0.0));
        assert!((hi - 0.2775).abs() < WILSON_TOL, "{hi}");
        // 9 of 10: (0.5958, 0.9821)
        let mut nine = [true; 10];
        nine[3] = false;
        let (acc, lo, hi) = accuracy_with_interval(&nine);
        assert_eq!(acc, 0.9);
        assert!((lo - 0.5958).abs() < WILSON_TOL, "{lo}");
        assert!((hi - 0.9821).abs() < WILSON_TOL, "{hi}");
        assert_eq!(accuracy_with_interval(&[]), (0.0, 0.0, 1.0));
    }
}
