//! What a few-shot run writes per episode (`results.jsonl`, through [`crate::store`]) and
//! its summaries (`summary.json`, `summary.md`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How one scoring read the model's answer to one episode.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScoringResult {
    pub prediction: String,
    pub correct: bool,
    /// Open-ended: the raw continuation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Log-probability of each class name, in the episode's class order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Vec<f32>>,
    /// Calibrated: the class log-probabilities after the content-free query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_free_logprobs: Option<Vec<f32>>,
}

/// One line of `results.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpisodeResult {
    pub episode: usize,
    pub prompt_hash: String,
    /// The first requested scoring's prediction.
    pub prediction: String,
    pub answer: String,
    pub correct: bool,
    pub classes: Vec<String>,
    pub query: String,
    pub prompt_tokens: Option<usize>,
    /// Every scoring asked for, by name (`open`, `constrained`, ...).
    pub scorings: BTreeMap<String, ScoringResult>,
}

/// Accuracy of one scoring over a run.
#[derive(Debug, Clone, Serialize)]
pub struct ScoringSummary {
    pub episodes: usize,
    pub correct: usize,
    pub accuracy: f64,
    pub ci95_low: f64,
    pub ci95_high: f64,
    /// Open-ended: share of answers that are one of the episode's class names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answered_a_class: Option<f64>,
}

/// Summaries per scoring, in `scorings` order, and the mean content-free probability of the
/// class at each position of the induction line (a model with no position bias gives 1/way).
pub fn summarize(
    results: &[&EpisodeResult],
    scorings: &[&str],
) -> (Vec<(String, ScoringSummary)>, Option<Vec<f64>>) {
    let mut out = Vec::new();
    for &s in scorings {
        let rows: Vec<&ScoringResult> = results.iter().filter_map(|r| r.scorings.get(s)).collect();
        let correct: Vec<bool> = rows.iter().map(|r| r.correct).collect();
        let (accuracy, lo, hi) = prompt::accuracy_with_interval(&correct);
        let answered_a_class = (s == "open").then(|| {
            let hit = results
                .iter()
                .filter(|r| {
                    r.scorings
                        .get(s)
                        .is_some_and(|x| r.classes.iter().any(|c| c.to_lowercase() == x.prediction))
                })
                .count();
            hit as f64 / results.len().max(1) as f64
        });
        out.push((
            s.to_string(),
            ScoringSummary {
                episodes: rows.len(),
                correct: correct.iter().filter(|&&c| c).count(),
                accuracy,
                ci95_low: lo,
                ci95_high: hi,
                answered_a_class,
            },
        ));
    }
    let mut sums: Vec<f64> = Vec::new();
    let mut n = 0usize;
    for r in results {
        if let Some(cf) = r
            .scorings
            .get("calibrated")
            .and_then(|c| c.content_free_logprobs.as_ref())
        {
            let max = cf.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let z: f64 = cf.iter().map(|&x| ((x - max) as f64).exp()).sum();
            if sums.len() < cf.len() {
                sums.resize(cf.len(), 0.0);
            }
            for (k, &x) in cf.iter().enumerate() {
                sums[k] += ((x - max) as f64).exp() / z;
            }
            n += 1;
        }
    }
    let bias = (n > 0).then(|| sums.iter().map(|s| s / n as f64).collect());
    (out, bias)
}

/// The summary as a markdown table.
pub fn markdown(title: &str, rows: &[(String, ScoringSummary)], bias: Option<&[f64]>) -> String {
    let mut s = format!("{title}\n\n| scoring | episodes | accuracy | 95% interval | answered a class name |\n|---|---|---|---|---|\n");
    for (name, r) in rows {
        s.push_str(&format!(
            "| {name} | {} | {:.1}% | {:.1}-{:.1}% | {} |\n",
            r.episodes,
            100.0 * r.accuracy,
            100.0 * r.ci95_low,
            100.0 * r.ci95_high,
            r.answered_a_class
                .map(|a| format!("{:.0}%", 100.0 * a))
                .unwrap_or_else(|| "-".into())
        ));
    }
    if let Some(b) = bias {
        let cells: Vec<String> = b.iter().map(|p| format!("{:.2}", p)).collect();
        s.push_str(&format!(
            "\nContent-free query (\"N/A\"): mean probability of the class at each position of the induction line: {}\n",
            cells.join(", ")
        ));
    }
    s
}
