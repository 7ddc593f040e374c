//! Two result folders scored on the same items, compared item by item: the exact McNemar
//! test (McNemar 1947; exact binomial form) that the measured tables in the docs quote as
//! "exact McNemar p". Two rows of a table whose 95% intervals overlap can still differ, when
//! they were measured on the same episodes: only the items one row gets right and the other
//! wrong carry the difference.

use std::collections::BTreeMap;
use std::path::Path;

use crate::bail;
use crate::error::{Context, Result};
use crate::fewshot::results::EpisodeResult;
use crate::naming::NamingResult;

/// One scoring, paired over the items both folders hold.
#[derive(Debug, Clone, PartialEq)]
pub struct PairedScoring {
    pub scoring: String,
    /// Items both folders scored.
    pub items: usize,
    pub correct_a: usize,
    pub correct_b: usize,
    /// Right in A only, and right in B only: the discordant pairs.
    pub only_a: usize,
    pub only_b: usize,
    /// Two-sided exact McNemar p-value.
    pub p_value: f64,
}

/// Two-sided exact McNemar p-value for `only_a` and `only_b` discordant pairs: under the
/// null each discordant pair falls either way with probability 1/2, so the smaller count is
/// binomial(n, 1/2); p = min(1, 2 P(X <= min)). Summed in log space, so n in the thousands
/// does not underflow 2^-n.
pub fn exact_mcnemar(only_a: usize, only_b: usize) -> f64 {
    let n = only_a + only_b;
    if n == 0 {
        return 1.0;
    }
    let k = only_a.min(only_b);
    let ln2n = n as f64 * std::f64::consts::LN_2;
    // ln C(n, i), built up from ln C(n, 0) = 0.
    let mut ln_c = 0.0f64;
    let mut tail = 0.0f64;
    for i in 0..=k {
        if i > 0 {
            ln_c += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        tail += (ln_c - ln2n).exp();
    }
    (2.0 * tail).min(1.0)
}

/// What one item scored in a folder: its identity (so that a pair is checked to be the same
/// item) and right or wrong per scoring.
struct Scored {
    identity: String,
    correct: BTreeMap<String, bool>,
}

/// Each item of a folder's `results.jsonl`, keyed by episode (few-shot runs: `run`,
/// `table1` cells) or by image (`eval-vqa --task emoji-caption`).
fn read_folder(dir: &Path) -> Result<BTreeMap<usize, Scored>> {
    let path = dir.join("results.jsonl");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = BTreeMap::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let value: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{} line {}: not JSON", path.display(), n + 1))?;
        let (key, scored) = if value.get("episode").is_some() {
            let r: EpisodeResult = serde_json::from_value(value).with_context(|| {
                format!("{} line {}: not a few-shot episode", path.display(), n + 1)
            })?;
            let identity = format!("{} {:?} {}", r.query, r.classes, r.answer);
            let correct = r
                .scorings
                .iter()
                .map(|(name, s)| (name.clone(), s.correct))
                .collect();
            (r.episode, Scored { identity, correct })
        } else if value.get("truth").is_some() {
            let r: NamingResult = serde_json::from_value(value)
                .with_context(|| format!("{} line {}: not a named image", path.display(), n + 1))?;
            let h = r.hits();
            let mut correct = BTreeMap::from([
                ("open".to_string(), h.open),
                ("constrained".to_string(), h.constrained),
                ("constrained-top5".to_string(), h.constrained_top5),
            ]);
            if let (Some(top1), Some(top5)) = (h.calibrated, h.calibrated_top5) {
                correct.insert("calibrated".into(), top1);
                correct.insert("calibrated-top5".into(), top5);
            }
            let identity = format!("{} {}", r.index, r.truth);
            (r.item, Scored { identity, correct })
        } else {
            bail!(
                "{} line {}: neither a few-shot episode nor a named image",
                path.display(),
                n + 1
            );
        };
        out.insert(key, scored);
    }
    Ok(out)
}

/// Every scoring both folders hold, paired over the items both scored. An item that both
/// hold under one key must be the same episode or image (query, classes and answer; or image
/// and name): otherwise the folders were drawn differently and no pairing holds.
pub fn compare_folders(a: &Path, b: &Path) -> Result<Vec<PairedScoring>> {
    let (ra, rb) = (read_folder(a)?, read_folder(b)?);
    let mut tallies: BTreeMap<String, [usize; 5]> = BTreeMap::new();
    for (key, x) in &ra {
        let Some(y) = rb.get(key) else { continue };
        if x.identity != y.identity {
            bail!(
                "item {key} differs between {} ({}) and {} ({}): the folders hold different \
                 episodes, so they cannot be paired",
                a.display(),
                x.identity,
                b.display(),
                y.identity
            );
        }
        for (scoring, &ca) in &x.correct {
            let Some(&cb) = y.correct.get(scoring) else {
                continue;
            };
            let t = tallies.entry(scoring.clone()).or_default();
            t[0] += 1;
            t[1] += ca as usize;
            t[2] += cb as usize;
            t[3] += (ca && !cb) as usize;
            t[4] += (cb && !ca) as usize;
        }
    }
    if tallies.is_empty() {
        bail!(
            "{} and {} share no scored item under a common scoring",
            a.display(),
            b.display()
        );
    }
    Ok(tallies
        .into_iter()
        .map(
            |(scoring, [items, correct_a, correct_b, only_a, only_b])| PairedScoring {
                scoring,
                items,
                correct_a,
                correct_b,
                only_a,
                only_b,
                p_value: exact_mcnemar(only_a, only_b),
            },
        )
        .collect())
}

/// The comparison as a markdown table.
pub fn markdown(a: &Path, b: &Path, rows: &[PairedScoring]) -> String {
    let pct = |c: usize, n: usize| 100.0 * c as f64 / n.max(1) as f64;
    let mut s = format!(
        "A: {}\nB: {}\n\n| scoring | items | A | B | right in A only | right in B only | exact McNemar p |\n|---|---|---|---|---|---|---|\n",
        a.display(),
        b.display()
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {:.1}% | {:.1}% | {} | {} | {:.3} |\n",
            r.scoring,
            r.items,
            pct(r.correct_a, r.items),
            pct(r.correct_b, r.items),
            r.only_a,
            r.only_b,
            r.p_value
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Relative error of `exact_mcnemar` for n <= 10 and k <= 1: each of its (at most two)
    /// terms is exp of an argument of magnitude <= 10 ln 2 < 7 reached in <= 4 roundings, so a
    /// term is off by at most (7 * 4 + 1) eps; the sum, the doubling and the min add 2 eps.
    /// 64 eps bounds that with room, on any IEEE-754 CPU.
    const SMALL_N_TOL: f64 = 64.0 * f64::EPSILON;

    fn close(x: f64, y: f64) -> bool {
        (x - y).abs() <= SMALL_N_TOL * y
    }

    /// Exact values: n = 5 discordant, 0 one way: 2 * 2^-5 = 0.0625; 1 of 10: 2 * (1 + 10) / 2^10;
    /// an even split is p = 1; no discordant pair says nothing (p = 1).
    #[test]
    fn exact_mcnemar_matches_the_binomial_tail() {
        assert!(close(exact_mcnemar(0, 5), 0.0625));
        assert!(close(exact_mcnemar(9, 1), 22.0 / 1024.0));
        assert_eq!(exact_mcnemar(7, 7), 1.0);
        assert_eq!(exact_mcnemar(0, 0), 1.0);
        // Symmetric, and finite where 2^-n underflows f64 (n = 3000).
        assert_eq!(exact_mcnemar(3, 40), exact_mcnemar(40, 3));
        // 2 P(X <= 1400), X ~ binomial(3000, 1/2) = 2.78563961e-4 (lgamma terms summed in
        // f64), a reference good to 5e-9 / 2.79 < 2e-9 relative. Here each term's argument
        // (magnitude <= 3000 ln 2 < 2100) gathers <= 2 roundings per step over <= 1,401
        // steps: <= 2100 * 2 * 1401 eps < 1.4e-9 absolute in the exponent, as much relative in
        // the term and the sum. 1e-8 covers both with room.
        let p = exact_mcnemar(1400, 1600);
        assert!((p / 2.785_639_61e-4 - 1.0).abs() < 1e-8, "{p}");
    }

    fn episode(i: usize, query: &str, right: &[(&str, bool)]) -> String {
        let scorings: serde_json::Map<String, serde_json::Value> = right
            .iter()
            .map(|(s, c)| {
                (
                    s.to_string(),
                    serde_json::json!({"prediction": "x", "correct": c}),
                )
            })
            .collect();
        serde_json::json!({
            "episode": i, "prompt_hash": "h", "prediction": "x", "answer": "cat",
            "correct": right[0].1, "classes": ["cat", "dog"], "query": query,
            "prompt_tokens": null, "scorings": scorings,
        })
        .to_string()
    }

    /// Pairs by episode, counts the discordant ones per scoring, skips episodes only one
    /// folder holds, and refuses folders whose episodes differ.
    #[test]
    fn folders_pair_by_episode_and_refuse_other_episodes() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let write = |d: &Path, lines: Vec<String>| {
            std::fs::write(d.join("results.jsonl"), lines.join("\n") + "\n").unwrap()
        };
        write(
            &a,
            vec![
                episode(0, "q0", &[("constrained", true), ("calibrated", false)]),
                episode(1, "q1", &[("constrained", false), ("calibrated", false)]),
                episode(2, "q2", &[("constrained", true), ("calibrated", true)]),
                episode(3, "q3", &[("constrained", true), ("calibrated", true)]),
            ],
        );
        write(
            &b,
            vec![
                episode(0, "q0", &[("constrained", false), ("calibrated", true)]),
                episode(1, "q1", &[("constrained", true), ("calibrated", true)]),
                episode(2, "q2", &[("constrained", false), ("calibrated", true)]),
            ],
        );
        let rows = compare_folders(&a, &b).unwrap();
        let get = |s: &str| rows.iter().find(|r| r.scoring == s).unwrap().clone();
        let c = get("constrained");
        assert_eq!(
            (c.items, c.correct_a, c.correct_b, c.only_a, c.only_b),
            (3, 2, 1, 2, 1)
        );
        // 2 of 3 discordant one way: p = min(1, 2 (1 + 3) / 8) = 1; 2 of 2: 2 / 4 = 0.5.
        assert!(close(c.p_value, 1.0));
        let k = get("calibrated");
        assert_eq!((k.only_a, k.only_b), (0, 2));
        assert!(close(k.p_value, 0.5));
        assert!(
            markdown(&a, &b, &rows).contains("| constrained | 3 | 66.7% | 33.3% | 2 | 1 | 1.000 |")
        );

        write(
            &b,
            vec![episode(0, "another query", &[("constrained", true)])],
        );
        let err = compare_folders(&a, &b).unwrap_err().to_string();
        assert!(
            err.contains("item 0 differs") && err.contains("another query"),
            "{err}"
        );
        std::fs::remove_file(b.join("results.jsonl")).unwrap();
        let err = compare_folders(&a, &b).unwrap_err().to_string();
        assert!(err.contains("results.jsonl"), "{err}");
    }

    /// Captioning folders pair by drawn image; right or wrong as the summary counts it.
    #[test]
    fn named_images_pair_by_item() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        for (d, constrained) in [(&a, "violin"), (&b, "guitar")] {
            std::fs::create_dir_all(d).unwrap();
            let line = serde_json::json!({
                "item": 0, "index": 482, "truth": "violin", "open": "guitar",
                "constrained": constrained, "top5": ["guitar", "violin"],
                "calibrated_top5": ["Violin", "banjo"],
            });
            std::fs::write(d.join("results.jsonl"), format!("{line}\n")).unwrap();
        }
        let rows = compare_folders(&a, &b).unwrap();
        let by: BTreeMap<&str, (usize, usize)> = rows
            .iter()
            .map(|r| (r.scoring.as_str(), (r.only_a, r.only_b)))
            .collect();
        assert_eq!(by["constrained"], (1, 0));
        assert_eq!(by["open"], (0, 0));
        assert_eq!(
            by["calibrated"],
            (0, 0),
            "case is ignored, as in the summary"
        );
        assert_eq!(rows.len(), 5);
    }
}
