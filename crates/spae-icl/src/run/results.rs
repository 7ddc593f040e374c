//! Result files of a run: `run.json` (what produced it), `results.jsonl` (one line per
//! episode, appended and flushed as each finishes, so a killed run loses at most the episode
//! in flight), `summary.json` and `summary.md`.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
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

/// `results.jsonl`, with the episodes an earlier run finished.
pub struct ResultStore {
    path: PathBuf,
    done: HashMap<usize, EpisodeResult>,
    file: File,
}

impl ResultStore {
    /// Opens (or creates) `path`. Lines a killed run left half-written are dropped with a
    /// warning and the file is rewritten without them; every complete line is kept.
    pub fn open(path: &Path) -> Result<Self> {
        let mut done = HashMap::new();
        let mut kept = Vec::new();
        let mut dropped = 0usize;
        if path.is_file() {
            let f = File::open(path).with_context(|| format!("reading {}", path.display()))?;
            for line in BufReader::new(f).lines() {
                let line = line.with_context(|| format!("reading {}", path.display()))?;
                if line.trim().is_empty() {
                    continue;
                }
                match serde_json::from_str::<EpisodeResult>(&line) {
                    Ok(r) => {
                        kept.push(line);
                        done.insert(r.episode, r);
                    }
                    Err(_) => dropped += 1,
                }
            }
        }
        if dropped > 0 {
            tracing::warn!(
                "{}: dropped {dropped} incomplete line(s) an interrupted run left",
                path.display()
            );
            let tmp = path.with_extension("jsonl.partial");
            let mut text = kept.join("\n");
            text.push('\n');
            std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            done,
            file,
        })
    }

    /// The finished result of `episode`, if its prompt is still `prompt_hash` and it holds
    /// every scoring in `scorings`.
    pub fn finished(
        &self,
        episode: usize,
        prompt_hash: &str,
        scorings: &[&str],
    ) -> Option<&EpisodeResult> {
        self.done.get(&episode).filter(|r| {
            r.prompt_hash == prompt_hash && scorings.iter().all(|s| r.scorings.contains_key(*s))
        })
    }

    pub fn append(&mut self, r: &EpisodeResult) -> Result<()> {
        let line = serde_json::to_string(r)?;
        writeln!(self.file, "{line}")
            .and_then(|_| self.file.flush())
            .with_context(|| format!("appending to {}", self.path.display()))?;
        self.done.insert(r.episode, r.clone());
        Ok(())
    }
}

/// Writes `run.json` the first time; afterwards refuses a run whose settings differ from the
/// ones that produced the results already there (`--episodes` and the scorings may change).
pub fn check_identity(
    out: &Path,
    identity: &serde_json::Value,
    extra: &serde_json::Value,
) -> Result<()> {
    let path = out.join("run.json");
    if path.is_file() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let old: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a run description", path.display()))?;
        let old = &old["identity"];
        if old != identity {
            let differ: Vec<String> = identity
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, v)| old.get(k.as_str()) != Some(v))
                .map(|(k, v)| {
                    format!(
                        "{k}: {} -> {v}",
                        old.get(k.as_str()).unwrap_or(&serde_json::Value::Null)
                    )
                })
                .collect();
            bail!(
                "{} holds results of a run with other settings ({}); pass another --out, or delete the directory",
                out.display(),
                differ.join(", ")
            );
        }
    }
    let doc = serde_json::json!({ "identity": identity, "last_invocation": extra });
    write_atomic(&path, &serde_json::to_string_pretty(&doc)?)
}

/// Items a previous run appended to the JSONL file at `path`, keyed by `key`, and the file
/// opened for appending more. A line a killed run left half-written is dropped (and its item
/// recomputed).
pub fn resume_jsonl<T: serde::de::DeserializeOwned>(
    path: &Path,
    key: impl Fn(&T) -> usize,
) -> Result<(BTreeMap<usize, T>, File)> {
    let mut done = BTreeMap::new();
    if let Ok(text) = std::fs::read_to_string(path) {
        for line in text.lines() {
            if let Ok(r) = serde_json::from_str::<T>(line) {
                done.insert(key(&r), r);
            }
        }
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    Ok((done, file))
}

pub fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
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
