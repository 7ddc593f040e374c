//! The few-shot grid of the paper's Table 1 (Sec. 4.1) for any task, LLM and checkpoint: 2-
//! and 5-way; no induction 1 shot; induction with 1, 3, 5 shots; induction 1 shot with 1, 3, 5
//! repeats; and their average. Every cell is one few-shot run ([`crate::fewshot::execute`]) in
//! its own directory, so a rerun is served from the result files.

use std::path::PathBuf;

use candle_core::Device;
use serde::{Deserialize, Serialize};
use spae_core::SpaeModel;

use crate::bail;
use crate::error::{Context, Result};
use crate::fewshot::results::ScoringSummary;
use crate::fewshot::{RunConfig, TeacherConfig, WordSource};
use crate::util::{invocation, sha256_file, sha256_hex, slug, write_atomic};

/// The paper's columns in its order, as `--columns` numbers them: (name in table1.md,
/// induction, shots, repeats).
pub const GRID: [(&str, bool, usize, usize); 7] = [
    ("no induction, 1 shot", false, 1, 0),
    ("induction, 1 shot", true, 1, 0),
    ("3 shots", true, 3, 0),
    ("5 shots", true, 5, 0),
    ("1 shot, 1 repeat", true, 1, 1),
    ("3 repeats", true, 1, 3),
    ("5 repeats", true, 1, 5),
];

/// The table header for `way` and the chosen columns.
fn header(way: usize, columns: &[usize]) -> String {
    let names: Vec<&str> = columns.iter().map(|&c| GRID[c].0).collect();
    format!(
        "| {way}-way | words per image | {} | avg |\n|---|---|{}---|\n",
        names.join(" | "),
        "---|".repeat(columns.len())
    )
}

/// The paper's rows (Table 1, Real-Name mini-ImageNet), printed beside ours.
const PAPER: &[(usize, &str, &str, [f64; 8])] = &[
    (
        2,
        "Frozen",
        "-",
        [1.7, 33.7, 66.0, 66.0, 63.0, 65.0, 63.7, 51.3],
    ),
    (
        2,
        "LQAE (GPT-3.5)",
        "256",
        [1.5, 35.2, 68.2, 69.8, 68.5, 68.7, 65.9, 54.0],
    ),
    (
        2,
        "SPAE (GPT-3.5)",
        "5",
        [5.3, 77.2, 84.4, 86.0, 79.4, 77.2, 77.1, 69.5],
    ),
    (
        2,
        "SPAE (PaLM 2-L)",
        "5",
        [32.2, 84.0, 88.5, 88.4, 85.1, 83.6, 82.4, 77.7],
    ),
    (
        2,
        "SPAE (PaLM 2-L)",
        "21",
        [27.9, 84.8, 92.5, 92.6, 84.8, 85.2, 85.4, 79.0],
    ),
    (
        5,
        "Frozen",
        "-",
        [0.9, 14.5, 34.7, 33.8, 33.8, 33.3, 32.8, 26.3],
    ),
    (
        5,
        "LQAE (GPT-3.5)",
        "256",
        [1.0, 15.7, 35.9, 36.5, 31.9, 36.4, 45.9, 29.0],
    ),
    (
        5,
        "SPAE (PaLM 2-L)",
        "5",
        [23.6, 64.2, 68.0, 69.9, 63.4, 62.0, 60.2, 58.8],
    ),
    (
        5,
        "SPAE (PaLM 2-L)",
        "21",
        [20.2, 65.1, 73.7, 74.3, 66.4, 67.0, 66.3, 61.9],
    ),
];

/// Accuracy per scoring of one cell.
type Cell = Vec<(String, ScoringSummary)>;

/// One row of the grid: what stands for an image.
struct Row {
    name: String,
    /// Short name in cell directories.
    key: &'static str,
    /// What the cells' directories are keyed by: the checkpoint's hash (with the teacher's, for
    /// the teacher's words).
    checkpoint_sha: String,
    words: WordSource,
    /// The teacher of [`WordSource::Teacher`], its side resolved.
    teacher: Option<TeacherConfig>,
    /// `None`: the base run's checkpoint.
    checkpoint: Option<PathBuf>,
    layers: usize,
    words_per_image: usize,
}

/// The grid: a base run (task, data, split, checkpoint, LLM, seed, prompts) whose way, shots,
/// repeats, induction, words and layers each cell sets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table1Config {
    pub base: RunConfig,
    /// A checkpoint with one flat layer and no semantic loss (the LQAE-style row).
    pub lqae_checkpoint: Option<PathBuf>,
    /// A teacher whose words make a row of their own (2 layers' worth of words): the ceiling
    /// of a tokenizer trained against it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher: Option<TeacherConfig>,
    pub ways: Vec<usize>,
    /// Only these columns of [`GRID`]; empty: all.
    pub columns: Vec<usize>,
    /// Default: `runs/table1-<task>-<llm>`.
    pub out: Option<PathBuf>,
}

/// Runs (or reads) every cell, writes `table1.md` and `table1.json`; returns the markdown and
/// where it went.
pub fn table1(args: &Table1Config) -> Result<(String, PathBuf)> {
    let base = &args.base;
    let (spae, spae_label) = base.checkpoint.load(&Device::Cpu)?;
    let spae_ckpt = base.checkpoint.path.clone();
    let pyramid = &spae.config().pyramid;
    let spae_sha = base.checkpoint.sha256()?;
    let mut rows = Vec::new();
    for layers in [2, 3] {
        if pyramid.check_depth(layers).is_ok() {
            rows.push(Row {
                name: format!("SPAE, {layers} layers"),
                key: "spae",
                checkpoint_sha: spae_sha.clone(),
                words: WordSource::Spae,
                teacher: None,
                checkpoint: spae_ckpt.clone(),
                layers,
                words_per_image: pyramid.tokens_up_to(layers),
            });
        }
    }
    if let Some(lqae) = &args.lqae_checkpoint {
        let m = SpaeModel::load(lqae, &Device::Cpu)
            .with_context(|| format!("--lqae-checkpoint {}", lqae.display()))?;
        // Only its config is read here: the run loads it again with its backbone, if any.
        let p = &m.config().pyramid;
        rows.push(Row {
            name: "LQAE-style (one flat layer)".into(),
            key: "lqae",
            checkpoint_sha: sha256_file(lqae)?,
            words: WordSource::Spae,
            teacher: None,
            checkpoint: Some(lqae.clone()),
            layers: p.depth(),
            words_per_image: p.tokens_up_to(p.depth()),
        });
    }
    if let Some(t) = &args.teacher {
        let side = t.image_size.unwrap_or(spae.config().image_size);
        // The words come from the checkpoint's codebook and the teacher: a retrained teacher
        // gets new cells, as a retrained checkpoint does.
        let teacher_sha = crate::scorer::scorer_sha256(&t.scorer)?;
        rows.push(Row {
            name: "teacher's words".into(),
            key: WordSource::Teacher.name(),
            checkpoint_sha: sha256_hex(format!("{spae_sha}+{teacher_sha}@{side}").as_bytes()),
            words: WordSource::Teacher,
            teacher: Some(TeacherConfig {
                scorer: t.scorer.clone(),
                image_size: Some(side),
            }),
            checkpoint: spae_ckpt.clone(),
            layers: 2,
            words_per_image: pyramid.tokens_up_to(2.min(pyramid.depth())),
        });
    }
    for (name, words) in [
        ("oracle words", WordSource::Oracle),
        ("random words", WordSource::Random),
    ] {
        rows.push(Row {
            name: name.into(),
            key: words.name(),
            checkpoint_sha: spae_sha.clone(),
            words,
            teacher: None,
            checkpoint: spae_ckpt.clone(),
            layers: 2,
            words_per_image: pyramid.tokens_up_to(2.min(pyramid.depth())),
        });
    }
    let llm_slug = slug(&base.llm.name);
    let out = args.out.clone().unwrap_or_else(|| {
        crate::store::default_out(&[&format!("table1-{}-{llm_slug}", base.task.name)])
    });
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let scorings: Vec<String> = base.scorings.iter().map(|s| s.key().to_string()).collect();

    let llm = base.llm.load()?;
    let columns: Vec<usize> = if args.columns.is_empty() {
        (0..GRID.len()).collect()
    } else {
        args.columns.clone()
    };
    if let Some(bad) = columns.iter().find(|&&c| c >= GRID.len()) {
        bail!(
            "--columns {bad}: the grid has columns 0-6 ({})",
            GRID.map(|g| g.0).join("; ")
        );
    }
    // Progress counts image words, not episodes: a prompt's length grows with its images
    // (way x shots x (repeats + 1), plus the query) times the words of each, and the grid's
    // prompts differ by 4x and more, so an episode count's ETA is far off early on.
    let images_per_prompt = |way: usize, c: usize| {
        let (_, _, shots, repeats) = GRID[c];
        way * shots * (repeats + 1) + 1
    };
    let mut work = 0;
    for &way in &args.ways {
        for row in &rows {
            for &c in &columns {
                work += images_per_prompt(way, c) * row.words_per_image;
            }
        }
    }
    let bar = crate::progress::bar((work * base.episodes) as u64, "table 1 image words");
    let mut prompt_tokens = 0usize;
    // acc[way][row][column] per scoring.
    let mut grid: Vec<Vec<Vec<Cell>>> = Vec::new();
    for &way in &args.ways {
        let mut by_row = Vec::new();
        for row in &rows {
            let cfgs: Vec<RunConfig> = columns
                .iter()
                .map(|&c| {
                    let (_, induction, shots, repeats) = GRID[c];
                    // Cells are keyed by the checkpoint's hash: a retrained checkpoint gets
                    // new cells instead of colliding with the old ones.
                    let dir = out.join("cells").join(format!(
                        "{}-{}-L{}-{way}way-{shots}shot-r{repeats}-{}",
                        row.key,
                        &row.checkpoint_sha[..12],
                        row.layers,
                        if induction { "ind" } else { "noind" }
                    ));
                    RunConfig {
                        checkpoint: crate::tokenizer::CheckpointRef::new(
                            row.checkpoint.clone(),
                            base.checkpoint.builtin,
                        ),
                        way,
                        shots,
                        repeats,
                        induction,
                        layers: row.layers,
                        words: row.words,
                        teacher: row.teacher.clone(),
                        out: Some(dir),
                        ..base.clone()
                    }
                })
                .collect();
            // A row's cells run episode by episode together, the most repeats first: an
            // episode's prompt with r repeats of its support set begins with the one with
            // fewer (the same draw), so a local model reuses most of it.
            let mut order: Vec<usize> = (0..cfgs.len()).collect();
            order.sort_by_key(|&i| {
                let c = &cfgs[i];
                (!c.induction, c.shots, std::cmp::Reverse(c.repeats))
            });
            let ordered: Vec<RunConfig> = order.iter().map(|&i| cfgs[i].clone()).collect();
            let words: Vec<u64> = order
                .iter()
                .map(|&i| (images_per_prompt(way, columns[i]) * row.words_per_image) as u64)
                .collect();
            let summaries =
                crate::fewshot::execute_interleaved(&ordered, llm.as_ref(), |c| bar.inc(words[c]))
                    .with_context(|| format!("{} {way}-way cells", row.name))?;
            let mut by_col: Vec<Cell> = vec![Vec::new(); cfgs.len()];
            for (&i, summary) in order.iter().zip(summaries) {
                prompt_tokens += summary.prompt_tokens;
                by_col[i] = summary.scorings;
            }
            by_row.push(by_col);
        }
        grid.push(by_row);
    }
    bar.finish_and_clear();

    let mut md = format!(
        "# Table 1 on {}, {}\n\nFew-shot accuracy (%) over {} episodes per cell (seed {}), [95% Wilson interval]; checkpoint `{}`.\n\
         Written by `spae-icl table1 {}`.\n",
        base.task.name,
        base.llm.name,
        base.episodes,
        base.seed,
        spae_label,
        invocation("table1")
    );
    let teacher = rows.iter().find_map(|r| r.teacher.as_ref());
    if let Some(t) = teacher {
        let side = t.image_size.unwrap_or(spae.config().image_size);
        md.push_str(&format!(
            "Teacher's words: each image's most relevant codebook entries under `{}` (images at {side}x{side}), most relevant first.\n",
            t.scorer,
        ));
    }
    let mut json_cells = Vec::new();
    for scoring in &scorings {
        md.push_str(&format!("\n## {}\n\n", scoring_title(scoring)));
        for (w, &way) in args.ways.iter().enumerate() {
            md.push_str(&header(way, &columns));
            for (r, row) in rows.iter().enumerate() {
                let found: Vec<Option<&ScoringSummary>> = grid[w][r]
                    .iter()
                    .map(|cell| cell.iter().find(|(k, _)| k == scoring).map(|(_, s)| s))
                    .collect();
                let accs: Vec<f64> = found
                    .iter()
                    .map(|s| s.map_or(f64::NAN, |s| 100.0 * s.accuracy))
                    .collect();
                let avg = accs.iter().sum::<f64>() / accs.len() as f64;
                // Each cell with its 95% Wilson interval, so rows can be told apart.
                let cells: Vec<String> = found
                    .iter()
                    .map(|s| match s {
                        Some(s) => format!(
                            "{:.1} [{:.0}, {:.0}]",
                            100.0 * s.accuracy,
                            100.0 * s.ci95_low,
                            100.0 * s.ci95_high
                        ),
                        None => "-".into(),
                    })
                    .collect();
                md.push_str(&format!(
                    "| {} | {} | {} | {avg:.1} |\n",
                    row.name,
                    row.words_per_image,
                    cells.join(" | ")
                ));
                json_cells.push(serde_json::json!({
                    "scoring": scoring, "way": way, "row": row.name,
                    "words_per_image": row.words_per_image, "accuracy": accs, "average": avg,
                }));
            }
            md.push('\n');
        }
    }
    md.push_str(&format!(
        "Prompt tokens over the grid (one pass; each scoring reads the same prompts): {prompt_tokens}.\n"
    ));
    md.push_str("\n## The paper (Real-Name mini-ImageNet, open-ended)\n\n");
    for way in [2, 5] {
        md.push_str(&header(way, &(0..GRID.len()).collect::<Vec<_>>()));
        for (_, name, tokens, v) in PAPER.iter().filter(|p| p.0 == way) {
            let cells: Vec<String> = v.iter().map(|a| format!("{a:.1}")).collect();
            md.push_str(&format!("| {name} | {tokens} | {} |\n", cells.join(" | ")));
        }
        md.push('\n');
    }
    write_atomic(&out.join("table1.md"), &md)?;
    let mut json = serde_json::json!({
            "task": base.task.name, "llm": base.llm.name, "episodes": base.episodes, "seed": base.seed,
            "checkpoint": spae_label, "checkpoint_sha256": spae_sha,
            // What each entry of a cell's `accuracy` is.
            "columns": columns.iter().map(|&c| serde_json::json!({
                "name": GRID[c].0, "induction": GRID[c].1,
                "shots": GRID[c].2, "repeats": GRID[c].3,
            })).collect::<Vec<_>>(),
            "cells": json_cells,
            "prompt_tokens_per_scoring_pass": prompt_tokens,
    });
    if let Some(t) = teacher {
        json["teacher"] = serde_json::to_value(t)?;
    }
    write_atomic(
        &out.join("table1.json"),
        &serde_json::to_string_pretty(&json)?,
    )?;
    let path = out.join("table1.md");
    Ok((md, path))
}

fn scoring_title(key: &str) -> &str {
    match key {
        "open" => "Open-ended (exact match, the paper's metric)",
        "constrained" => "Constrained to the class names (best log-probability)",
        "calibrated" => "Constrained and calibrated (content-free query)",
        "constrained_decoding" => "Token-level constrained decoding",
        other => other,
    }
}
