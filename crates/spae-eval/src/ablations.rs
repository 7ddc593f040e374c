//! The design choices of SPAE (paper Sec. 3, ablated in Sec. 4.4) switched off one at a time,
//! each trained on the same budget and scored the same way:
//!
//! - `spae`: SAQ, pyramid 1,2,4,8,8, semantic loss on the top two layers (the default recipe);
//! - `rq`: residual instead of streaming-average quantization (Sec. 3.2);
//! - `no-semantic`: no semantic loss (Sec. 3.1, Eq. 3);
//! - `flat`: one 8x8 layer instead of the pyramid (with the semantic loss on it).
//!
//! Scores: PSNR per depth and first-layer relevance on a test split (the `table-tokenizer`
//! evaluation), and 2-/5-way 1-shot accuracy of the frozen LLM (one `run` each, 2 layers of a
//! pyramid or the flat layer). Training, evaluation and runs all resume from their files.

use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::bail;
use crate::error::{Context, Result};
use crate::fewshot::{RunConfig, Scoring};
use crate::llm::LlmConfig;
use crate::task::TaskSpec;
use crate::tokenizer::CheckpointRef;
use crate::train::TrainRunConfig;
use crate::util::{invocation, write_atomic};

/// How a variant changes the shared training run.
type Change = fn(&mut TrainRunConfig);

/// (name, what it changes, how).
const VARIANTS: &[(&str, &str, Change)] = &[
    ("spae", "the default recipe", |_| {}),
    ("rq", "RQ instead of SAQ", |t| {
        t.arch.quantizer = "rq".into()
    }),
    ("no-semantic", "no semantic loss", |t| {
        t.scorer = "none".into()
    }),
    ("flat", "one flat 8x8 layer", |t| {
        t.arch.layers = vec![8];
        t.semantic_layers = 1;
    }),
];

/// The variants, their shared budget, and how they are scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AblationsConfig {
    /// Some of `spae`, `rq`, `no-semantic`, `flat`.
    pub variants: Vec<String>,
    /// Training steps of every variant: the shared budget.
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub train_data: String,
    /// Codebook projection of every variant.
    pub project_dim: usize,
    /// Scorer of the semantic loss and of the relevance columns.
    pub scorer: String,
    /// Test set of the reconstruction and relevance columns.
    pub eval_data: String,
    pub limit: usize,
    /// Task of the few-shot columns.
    pub task: String,
    pub episodes: usize,
    pub llm: LlmConfig,
    pub out: PathBuf,
}

impl Default for AblationsConfig {
    fn default() -> Self {
        Self {
            variants: VARIANTS.iter().map(|v| v.0.to_string()).collect(),
            steps: 400,
            batch_size: 32,
            lr: 2e-3,
            train_data: "mnist+fashion-mnist".into(),
            project_dim: 16,
            scorer: "default".into(),
            eval_data: "mnist".into(),
            limit: 1000,
            task: "fashion-mnist".into(),
            episodes: 50,
            llm: LlmConfig::default(),
            out: crate::store::default_out(&["ablations"]),
        }
    }
}

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

/// Train `dir` to `steps` unless it is there already (resuming a partial run).
fn train_variant(args: &AblationsConfig, dir: &Path, change: Change) -> Result<()> {
    let state = dir.join("train.json");
    let mut resume = false;
    if let Ok(text) = std::fs::read_to_string(&state) {
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| state.display().to_string())?;
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
            std::fs::remove_file(&state).with_context(|| state.display().to_string())?;
            let _ = std::fs::remove_file(dir.join("metrics.jsonl"));
        }
    }
    crate::train::train(&variant_run(args, dir, change, resume), &Device::Cpu)?;
    Ok(())
}

/// The training run of one variant: the shared budget, then the variant's change.
fn variant_run(args: &AblationsConfig, dir: &Path, change: Change, resume: bool) -> TrainRunConfig {
    let mut t = TrainRunConfig {
        data: args.train_data.clone(),
        scorer: args.scorer.clone(),
        steps: args.steps,
        batch_size: args.batch_size,
        lr: args.lr,
        warmup: (args.steps / 10).clamp(1, 100),
        semantic_ramp: (args.steps / 4).max(1),
        checkpoint_every: 100,
        out: dir.to_path_buf(),
        resume,
        ..TrainRunConfig::default()
    };
    t.arch.project_dim = args.project_dim;
    change(&mut t);
    t
}

/// The settings a variant's row depends on.
fn settings(args: &AblationsConfig) -> Result<serde_json::Value> {
    Ok(serde_json::json!({
        "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
        "train_data": args.train_data, "scorer_sha256": crate::scorer::scorer_sha256(&args.scorer)?,
        "eval_data": args.eval_data, "limit": args.limit, "task": args.task,
        "episodes": args.episodes, "llm": args.llm.name,
    }))
}

/// The row a finished variant left in `dir`, if its settings are these.
fn finished_row(dir: &Path, settings: &serde_json::Value) -> Option<AblationRow> {
    let text = std::fs::read_to_string(dir.join("row.json")).ok()?;
    let row: AblationRow = serde_json::from_str(&text).ok()?;
    (row.settings == *settings).then_some(row)
}

/// Trains, evaluates and runs each variant (or reads its finished row); writes
/// `ablations.md` and `ablations.json`; returns the markdown.
pub fn ablations(args: &AblationsConfig) -> Result<String> {
    for v in &args.variants {
        if !VARIANTS.iter().any(|(n, _, _)| n == v) {
            bail!(
                "--variants {v:?}: expected some of {}",
                VARIANTS.iter().map(|v| v.0).collect::<Vec<_>>().join(", ")
            );
        }
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let settings = settings(args)?;
    let task = TaskSpec::resolve(&args.task)?;
    // The model loads on first use: a rerun served from the rows loads none.
    let mut llm: Option<Box<dyn llm_client::LanguageModel>> = None;
    let mut rows = Vec::new();
    for (name, change, how) in VARIANTS
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
        train_variant(args, &train_dir, *how).with_context(|| format!("training {name}"))?;
        let ckpt_path = train_dir.join("checkpoint.safetensors");
        let ckpt = CheckpointRef::or_default(Some(ckpt_path.clone()));
        let eval = crate::tokenizer_eval::evaluate_cached(
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
            let run = RunConfig {
                checkpoint: ckpt.clone(),
                llm: args.llm.clone(),
                layers: prompt_layers,
                way,
                shots: 1,
                repeats: 0,
                induction: true,
                episodes: args.episodes,
                seed: 0,
                scorings: vec![Scoring::Open, Scoring::Constrained],
                out: Some(run_dir.clone()),
                ..RunConfig::for_task(task.clone())
            };
            if llm.is_none() {
                llm = Some(args.llm.load()?);
            }
            let model = llm.as_deref();
            let summary = crate::fewshot::execute(&run, model)
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
        write_atomic(&dir.join("row.json"), &serde_json::to_string_pretty(&row)?)?;
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
        args.llm.name,
        invocation("ablations")
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
    write_atomic(&args.out.join("ablations.md"), &md)?;
    write_atomic(
        &args.out.join("ablations.json"),
        &serde_json::to_string_pretty(&serde_json::json!({ "rows": rows }))?,
    )?;
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_of(variant: &str) -> TrainRunConfig {
        let args = AblationsConfig {
            steps: 40,
            ..AblationsConfig::default()
        };
        let how = VARIANTS.iter().find(|v| v.0 == variant).expect("variant").2;
        variant_run(&args, Path::new("x"), how, false)
    }

    #[test]
    fn each_variant_changes_one_thing() {
        let base = run_of("spae");
        assert_eq!(
            (
                base.steps,
                base.scorer.as_str(),
                base.arch.quantizer.as_str()
            ),
            (40, "default", "saq")
        );
        assert_eq!(base.arch.layers, vec![1, 2, 4, 8, 8]);
        assert_eq!((base.warmup, base.semantic_ramp), (4, 10));
        assert_eq!(run_of("rq").arch.quantizer, "rq");
        assert_eq!(run_of("no-semantic").scorer, "none");
        let flat = run_of("flat");
        assert_eq!(
            (flat.arch.layers.clone(), flat.semantic_layers),
            (vec![8], 1)
        );
        assert_eq!(flat.scorer, "default");
        for v in ["rq", "no-semantic", "flat"] {
            let mut t = run_of(v);
            (t.arch.quantizer, t.scorer, t.arch.layers, t.semantic_layers) = (
                base.arch.quantizer.clone(),
                base.scorer.clone(),
                base.arch.layers.clone(),
                base.semantic_layers,
            );
            assert_eq!(t, base, "{v} changes something else too");
        }
    }
}
