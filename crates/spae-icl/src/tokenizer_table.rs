//! `spae-icl table-tokenizer`: reconstruction (PSNR, SSIM) and semantic relevance per pyramid
//! depth for several checkpoints and data sets, side by side (issue 8; SPAE.md section 7's
//! tokenizer comparison). Each (checkpoint, set) pair is one cached JSON keyed by the
//! checkpoint's and the scorer's hashes, so a rerun is served from files.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::cli::{CheckpointArg, TableTokenizerArgs};
use crate::evaluate::DepthRow;

/// One checkpoint on one data set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenizerRow {
    pub checkpoint: String,
    pub checkpoint_sha256: String,
    pub data: String,
    pub split: String,
    pub images: usize,
    pub depths: Vec<DepthRow>,
}

/// `LABEL=PATH`, `PATH` or `builtin` -> (label, checkpoint).
pub fn parse_checkpoint(spec: &str) -> (String, CheckpointArg) {
    let (label, path) = match spec.split_once('=') {
        Some((l, p)) => (Some(l.to_string()), p),
        None => (None, spec),
    };
    if path == "builtin" {
        return (
            label.unwrap_or_else(|| "built-in".into()),
            CheckpointArg { checkpoint: None },
        );
    }
    let path = PathBuf::from(path);
    let label = label.unwrap_or_else(|| {
        path.file_stem().map_or_else(
            || path.display().to_string(),
            |s| s.to_string_lossy().into(),
        )
    });
    (
        label,
        CheckpointArg {
            checkpoint: Some(path),
        },
    )
}

/// Evaluate (or read from `cache_dir`) one checkpoint on one data set.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_cached(
    label: &str,
    ckpt: &CheckpointArg,
    data_spec: &str,
    split: &str,
    limit: usize,
    scorer_spec: &str,
    top_k: usize,
    cache_dir: &Path,
) -> Result<TokenizerRow> {
    let sha = crate::tokens::checkpoint_sha256(ckpt)?;
    let scorer_sha = crate::scorer::scorer_sha256(scorer_spec)?;
    let key = format!(
        "{}-{}-{split}-{limit}-k{top_k}-scorer{}.json",
        &sha[..12],
        crate::run::slug(data_spec),
        &scorer_sha[..scorer_sha.len().min(12)]
    );
    let cached = cache_dir.join(key);
    if let Ok(text) = std::fs::read_to_string(&cached) {
        let mut row: TokenizerRow = serde_json::from_str(&text)
            .with_context(|| format!("{} (delete it to recompute)", cached.display()))?;
        tracing::info!("{label} on {data_spec}: from {}", cached.display());
        row.checkpoint = label.to_string();
        return Ok(row);
    }
    let (model, _) = crate::tokens::load_checkpoint(ckpt, &Device::Cpu)?;
    let data = crate::evaluate::data_for(&model, data_spec, split)?;
    let scorer = match scorer_spec {
        "none" => None,
        spec => Some(
            crate::scorer::load_scorer(spec, model.codebook())
                .with_context(|| format!("--scorer {spec}"))?,
        ),
    };
    let n = limit.min(data.len());
    tracing::info!("{label} on {data_spec}: {n} images");
    let depths = crate::evaluate::depth_rows(&model, &data, n, scorer.as_ref(), top_k, 64)?;
    let row = TokenizerRow {
        checkpoint: label.to_string(),
        checkpoint_sha256: sha,
        data: data_spec.to_string(),
        split: split.to_string(),
        images: n,
        depths,
    };
    std::fs::create_dir_all(cache_dir)
        .with_context(|| format!("creating {}", cache_dir.display()))?;
    crate::run::results::write_atomic(&cached, &serde_json::to_string_pretty(&row)?)?;
    Ok(row)
}

pub fn table_tokenizer(args: TableTokenizerArgs) -> Result<()> {
    let specs = if args.checkpoints.is_empty() {
        vec!["builtin".to_string()]
    } else {
        args.checkpoints.clone()
    };
    let checkpoints: Vec<(String, CheckpointArg)> =
        specs.iter().map(|s| parse_checkpoint(s)).collect();
    let cells = args.out.join("cells");
    let mut rows = Vec::new();
    for data in &args.data {
        for (label, ckpt) in &checkpoints {
            rows.push(
                evaluate_cached(
                    label,
                    ckpt,
                    data,
                    &args.split,
                    args.limit,
                    &args.scorer,
                    args.top_k,
                    &cells,
                )
                .with_context(|| format!("{label} on {data}"))?,
            );
        }
    }
    let mut md = format!(
        "# Tokenizer quality per pyramid depth\n\nFirst {} {} images of each set; relevance from scorer `{}` (K = {}).\n\
         Written by `spae-icl table-tokenizer {}`.\n",
        args.limit,
        args.split,
        args.scorer,
        args.top_k,
        crate::run::invocation("table-tokenizer")
    );
    for r in &rows {
        md.push_str(&format!(
            "\n## {} on {} ({} images, checkpoint sha256 {})\n\n",
            r.checkpoint,
            r.data,
            r.images,
            &r.checkpoint_sha256[..12]
        ));
        md.push_str(&crate::evaluate::markdown(&r.depths));
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("{}", args.out.display()))?;
    crate::run::results::write_atomic(&args.out.join("table-tokenizer.md"), &md)?;
    crate::run::results::write_atomic(
        &args.out.join("table-tokenizer.json"),
        &serde_json::to_string_pretty(&serde_json::json!({ "rows": rows }))?,
    )?;
    println!("{md}");
    println!("written: {}", args.out.join("table-tokenizer.md").display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_specs_take_a_label_a_path_or_builtin() {
        let (l, c) = parse_checkpoint("builtin");
        assert_eq!((l.as_str(), c.checkpoint), ("built-in", None));
        let (l, c) = parse_checkpoint("LQAE-style=runs/lqae/checkpoint.safetensors");
        assert_eq!(l, "LQAE-style");
        assert_eq!(
            c.checkpoint.as_deref(),
            Some(Path::new("runs/lqae/checkpoint.safetensors"))
        );
        let (l, _) = parse_checkpoint("checkpoints/spae-smollm2.safetensors");
        assert_eq!(l, "spae-smollm2");
    }
}
