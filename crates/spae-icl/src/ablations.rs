//! `spae-icl ablations`: the design choices of SPAE (SPAE.md sections 3-5) switched off one at
//! a time, each trained on the same budget and scored the same way:
//!
//! - `spae`: SAQ, pyramid 1,2,4,8,8, semantic loss on the top two layers (the default recipe);
//! - `rq`: residual instead of streaming-average quantization (paper section 3.2);
//! - `no-semantic`: no semantic loss (section 3.3);
//! - `flat`: one 8x8 layer instead of the pyramid (with the semantic loss on it).
//!
//! Scores: PSNR per depth and first-layer relevance on a test split (the `table-tokenizer`
//! evaluation), and 2-/5-way 1-shot accuracy of the frozen LLM (one `run` each, 2 layers of a
//! pyramid or the flat layer). Training, evaluation and runs all resume from their files.

use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde::{Deserialize, Serialize};

use crate::cli::{AblationsArgs, CheckpointArg, Cli, Command};

/// (name, what it changes, extra `train` flags).
const VARIANTS: &[(&str, &str, &[&str])] = &[
    ("spae", "the default recipe", &[]),
    ("rq", "RQ instead of SAQ", &["--quantizer", "rq"]),
    ("no-semantic", "no semantic loss", &["--scorer", "none"]),
    (
        "flat",
        "one flat 8x8 layer",
        &["--layers", "8", "--semantic-layers", "1"],
    ),
];

#[derive(Debug, Serialize, Deserialize)]
struct AblationRow {
    /// What produced the row (every setting but `--variants` and `--out`): a rerun with the
    /// same settings reads the row instead of recomputing it.
    settings: serde_json::Value,
    variant: String,
    change: String,
    checkpoint_sha256: String,
    /// Pyramid layers the few-shot prompts show, and their words per image.
    prompt_layers: usize,
    words_per_image: usize,
    psnr_full: f64,
    psnr_at_prompt_layers: f64,
    layer1_class_top_k_hit_rate: f64,
    layer1_distinct_per_class: f64,
    /// (way, scoring) -> accuracy in [0, 1].
    accuracy: Vec<(usize, String, f64)>,
}

fn parse(argv: Vec<String>) -> Result<Command> {
    Ok(Cli::try_parse_from(argv)
        .context("internal: an ablation's arguments did not parse")?
        .command)
}

/// Train `dir` to `steps` unless it is there already (resuming a partial run).
fn train_variant(args: &AblationsArgs, dir: &Path, flags: &[&str]) -> Result<()> {
    let state = dir.join("train.json");
    let mut resume = false;
    if let Ok(text) = std::fs::read_to_string(&state) {
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{}", state.display()))?;
        let done = v["step"].as_u64().unwrap_or(0) as usize;
        let planned = v["config"]["steps"].as_u64().unwrap_or(0) as usize;
        if planned != args.steps {
            bail!(
                "{} was trained for --steps {planned}, this run asks {}: delete it or pick another --out",
                dir.display(),
                args.steps
            );
        }
        let have_checkpoint = dir.join("checkpoint.safetensors").is_file();
        if done >= args.steps && have_checkpoint {
            tracing::info!("{}: trained already ({done} steps)", dir.display());
            return Ok(());
        }
        // Without its checkpoint (result folders keep only the small files) it starts over.
        resume = done > 0 && have_checkpoint;
        if !have_checkpoint {
            std::fs::remove_file(&state).with_context(|| format!("{}", state.display()))?;
            let _ = std::fs::remove_file(dir.join("metrics.jsonl"));
        }
    }
    let argv = train_argv(args, dir, flags, resume);
    let Command::Train(train_args) = parse(argv)? else {
        bail!("internal: not a train command");
    };
    crate::train::train(train_args)
}

/// `spae-icl train` arguments of one variant: the shared budget, then the variant's flags
/// (which replace shared ones: clap refuses a flag given twice).
fn train_argv(args: &AblationsArgs, dir: &Path, flags: &[&str], resume: bool) -> Vec<String> {
    let scorer = match flags.iter().position(|f| *f == "--scorer") {
        Some(i) => flags[i + 1],
        None => args.scorer.as_str(),
    };
    let mut argv: Vec<String> = [
        "spae-icl",
        "train",
        "--data",
        &args.train_data,
        "--scorer",
        scorer,
        "--steps",
        &args.steps.to_string(),
        "--batch-size",
        &args.batch_size.to_string(),
        "--lr",
        &args.lr.to_string(),
        "--warmup",
        &(args.steps / 10).clamp(1, 100).to_string(),
        "--semantic-ramp",
        &(args.steps / 4).max(1).to_string(),
        "--checkpoint-every",
        "100",
        "--project-dim",
        &args.project_dim.to_string(),
        "--out",
        &dir.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for pair in flags.chunks(2).filter(|p| p[0] != "--scorer") {
        argv.extend(pair.iter().map(|s| s.to_string()));
    }
    if resume {
        argv.push("--resume".into());
    }
    argv
}

/// The settings a variant's row depends on.
fn settings(args: &AblationsArgs) -> Result<serde_json::Value> {
    Ok(serde_json::json!({
        "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
        "train_data": args.train_data, "scorer_sha256": crate::scorer::scorer_sha256(&args.scorer)?,
        "eval_data": args.eval_data, "limit": args.limit, "task": args.task,
        "episodes": args.episodes, "llm": args.llm,
    }))
}

/// The row a finished variant left in `dir`, if its settings are these.
fn finished_row(dir: &Path, settings: &serde_json::Value) -> Option<AblationRow> {
    let text = std::fs::read_to_string(dir.join("row.json")).ok()?;
    let row: AblationRow = serde_json::from_str(&text).ok()?;
    (row.settings == *settings).then_some(row)
}

pub fn ablations(args: AblationsArgs) -> Result<()> {
    for v in &args.variants {
        if !VARIANTS.iter().any(|(n, _, _)| n == v) {
            bail!(
                "--variants {v:?}: expected some of {}",
                VARIANTS.iter().map(|v| v.0).collect::<Vec<_>>().join(", ")
            );
        }
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("{}", args.out.display()))?;
    let settings = settings(&args)?;
    // The model loads on first use: a rerun served from the rows loads none.
    let mut llm: Option<Box<dyn llm_client::LanguageModel>> = None;
    let mut rows = Vec::new();
    for (name, change, flags) in VARIANTS
        .iter()
        .filter(|v| args.variants.iter().any(|n| n == v.0))
    {
        let dir = args.out.join(name);
        if let Some(row) = finished_row(&dir, &settings) {
            tracing::info!("ablation {name}: from {}", dir.join("row.json").display());
            rows.push(row);
            continue;
        }
        let train_dir = dir.join("train");
        tracing::info!("ablation {name}: {change}");
        train_variant(&args, &train_dir, flags).with_context(|| format!("training {name}"))?;
        let ckpt_path = train_dir.join("checkpoint.safetensors");
        let ckpt = CheckpointArg {
            checkpoint: Some(ckpt_path.clone()),
        };
        let eval = crate::tokenizer_table::evaluate_cached(
            name,
            &ckpt,
            &args.eval_data,
            "test",
            args.limit,
            &args.scorer,
            50,
            &args.out.join("cells"),
        )
        .with_context(|| format!("evaluating {name}"))?;
        let depth = eval.depths.len();
        let prompt_layers = if *name == "flat" { 1 } else { 2.min(depth) };
        let mut accuracy = Vec::new();
        for way in [2usize, 5] {
            let run_dir = dir.join(format!(
                "run-{way}way-1shot-{}",
                &eval.checkpoint_sha256[..12]
            ));
            let argv: Vec<String> = [
                "spae-icl",
                "run",
                "--task",
                &args.task,
                "--llm",
                &args.llm,
                "--checkpoint",
                &ckpt_path.display().to_string(),
                "--layers",
                &prompt_layers.to_string(),
                "--way",
                &way.to_string(),
                "--shots",
                "1",
                "--episodes",
                &args.episodes.to_string(),
                "--scoring",
                "open,constrained",
                "--out",
                &run_dir.display().to_string(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let Command::Run(run_args) = parse(argv)? else {
                bail!("internal: not a run command");
            };
            if llm.is_none() {
                llm = Some(crate::llm::load(&args.llm, &args.api)?);
            }
            let model = llm.as_deref();
            let summary = crate::run::execute(&run_args, model)
                .with_context(|| format!("{name} {way}-way run in {}", run_dir.display()))?;
            for (key, s) in summary.scorings {
                accuracy.push((way, key, s.accuracy));
            }
        }
        let first = &eval.depths[0];
        let row = AblationRow {
            settings: settings.clone(),
            variant: name.to_string(),
            change: change.to_string(),
            checkpoint_sha256: eval.checkpoint_sha256.clone(),
            prompt_layers,
            words_per_image: eval.depths[prompt_layers - 1].tokens,
            psnr_full: eval.depths[depth - 1].psnr,
            psnr_at_prompt_layers: eval.depths[prompt_layers - 1].psnr,
            layer1_class_top_k_hit_rate: first.class_top_k_hit_rate,
            layer1_distinct_per_class: first.distinct_per_class,
            accuracy,
        };
        crate::run::results::write_atomic(
            &dir.join("row.json"),
            &serde_json::to_string_pretty(&row)?,
        )?;
        rows.push(row);
    }
    let acc = |r: &AblationRow, way: usize, key: &str| {
        r.accuracy
            .iter()
            .find(|(w, k, _)| *w == way && k == key)
            .map_or("-".to_string(), |(_, _, a)| format!("{:.0}", 100.0 * a))
    };
    let mut md = format!(
        "# Ablations\n\nEach variant trained for {} steps of {} images on {} (lr {}); reconstruction and \
         relevance on the first {} {} test images; few-shot: {} 1-shot with induction, {} episodes, {}.\n\
         Written by `spae-icl ablations {}`.\n\n\
         | variant | change | words in prompt | PSNR full depth (dB) | PSNR at prompt depth | layer 1 in class's top 50 | layer-1 words per class | 2-way open | 2-way constrained | 5-way open | 5-way constrained |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
        args.steps,
        args.batch_size,
        args.train_data,
        args.lr,
        args.limit,
        args.eval_data,
        args.task,
        args.episodes,
        args.llm,
        crate::run::invocation("ablations")
    );
    for r in &rows {
        md.push_str(&format!(
            "| {} | {} | {} | {:.2} | {:.2} | {:.1}% | {:.1} | {} | {} | {} | {} |\n",
            r.variant,
            r.change,
            r.words_per_image,
            r.psnr_full,
            r.psnr_at_prompt_layers,
            100.0 * r.layer1_class_top_k_hit_rate,
            r.layer1_distinct_per_class,
            acc(r, 2, "open"),
            acc(r, 2, "constrained"),
            acc(r, 5, "open"),
            acc(r, 5, "constrained"),
        ));
    }
    crate::run::results::write_atomic(&args.out.join("ablations.md"), &md)?;
    crate::run::results::write_atomic(
        &args.out.join("ablations.json"),
        &serde_json::to_string_pretty(&serde_json::json!({ "rows": rows }))?,
    )?;
    println!("{md}");
    println!("written: {}", args.out.join("ablations.md").display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn train_args(variant: &str) -> crate::cli::TrainArgs {
        let Ok(Command::Ablations(args)) = parse(vec![
            "spae-icl".into(),
            "ablations".into(),
            "--steps".into(),
            "40".into(),
        ]) else {
            panic!("ablations arguments");
        };
        let flags = VARIANTS.iter().find(|v| v.0 == variant).expect("variant").2;
        let Ok(Command::Train(t)) = parse(train_argv(&args, Path::new("x"), flags, false)) else {
            panic!("train arguments of {variant}");
        };
        t
    }

    #[test]
    fn each_variant_changes_one_thing() {
        let base = train_args("spae");
        assert_eq!(
            (
                base.steps,
                base.scorer.as_str(),
                base.model.quantizer.as_str()
            ),
            (40, "default", "saq")
        );
        assert_eq!(base.model.layers, vec![1, 2, 4, 8, 8]);
        assert_eq!(train_args("rq").model.quantizer, "rq");
        assert_eq!(train_args("no-semantic").scorer, "none");
        let flat = train_args("flat");
        assert_eq!(
            (flat.model.layers.clone(), flat.semantic_layers),
            (vec![8], 1)
        );
        assert_eq!(flat.scorer, "default");
    }
}
