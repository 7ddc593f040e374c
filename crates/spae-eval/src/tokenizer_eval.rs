//! Tokenizer quality per pyramid depth: reconstruction (PSNR, SSIM), codebook usage and
//! semantic relevance of each layer's words (the paper's tokenizer comparison, Sec. 4 and
//! Table 4), for one checkpoint or several side by side. Each (checkpoint, set) pair is one
//! cached JSON keyed by the checkpoint's and the scorer's hashes, so a rerun is served from
//! files.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::{Deserialize, Serialize};
use spae_core::metrics::{psnr, ssim_chw};
use spae_core::SemanticScorer;

use crate::error::{Context, EvalError, Result};
use crate::tokenizer::CheckpointRef;
use crate::util::{invocation, slug, write_atomic};

/// One row of the table: quality after `depth` layers, and usage of layer `depth`'s words.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DepthRow {
    pub depth: usize,
    /// Words in the first `depth` layers.
    pub tokens: usize,
    pub psnr: f64,
    pub ssim: f64,
    /// Distinct codebook entries used by layer `depth` over the evaluated images.
    pub distinct_entries: usize,
    /// The most used entry of layer `depth`, and its share of that layer's tokens.
    pub top_word: String,
    pub top_word_share: f64,
    /// Mean scorer relevance (cosine) of layer `depth`'s words to their image.
    pub mean_relevance: f64,
    /// Share of layer `depth`'s words among their image's `top_k` most relevant entries.
    pub top_k_hit_rate: f64,
    /// Share of layer `depth`'s words among the `top_k` entries most relevant to their
    /// image's class (relevance averaged over the evaluated images of that class).
    pub class_top_k_hit_rate: f64,
    /// Mean number of distinct words this layer uses per class.
    pub distinct_per_class: f64,
    pub top_k: usize,
}

/// The data set `spec`'s split `split` (a name), at the size and channels `model` takes.
pub fn data_for(
    model: &spae_core::SpaeModel,
    spec: &str,
    split: &str,
) -> Result<spae_datasets::LabeledImages> {
    let cfg = model.config();
    let split = split
        .parse()
        .map_err(|e: String| EvalError::msg(format!("--split: {e}")))?;
    Ok(spae_datasets::load_spec(
        spec,
        split,
        cfg.in_channels,
        cfg.image_size,
    )?)
}

/// The table's rows in markdown.
pub fn markdown(rows: &[DepthRow]) -> String {
    let k = rows.first().map_or(0, |r| r.top_k);
    let mut md = format!(
        "| depth | tokens | PSNR (dB) | SSIM | distinct words in layer | per class | most used word (share) | mean relevance | in image's top {k} | in class's top {k} |\n\
         |---|---|---|---|---|---|---|---|---|---|\n"
    );
    for r in rows {
        md.push_str(&format!(
            "| {} | {} | {:.2} | {:.4} | {} | {:.1} | {} ({:.0}%) | {:.3} | {:.1}% | {:.1}% |\n",
            r.depth,
            r.tokens,
            r.psnr,
            r.ssim,
            r.distinct_entries,
            r.distinct_per_class,
            r.top_word,
            100.0 * r.top_word_share,
            r.mean_relevance,
            100.0 * r.top_k_hit_rate,
            100.0 * r.class_top_k_hit_rate
        ));
    }
    md
}

/// Quality and word usage per depth over the first `n` images of `data`; relevance metrics
/// (K = `k`) when a scorer is given.
pub fn depth_rows(
    model: &spae_core::SpaeModel,
    data: &spae_datasets::LabeledImages,
    n: usize,
    scorer: Option<&crate::scorer::LoadedScorer>,
    k: usize,
    batch_size: usize,
) -> Result<Vec<DepthRow>> {
    let cfg = model.config();
    let n = n.min(data.len());
    let depth = cfg.pyramid.depth();
    let plane = cfg.in_channels * cfg.image_size * cfg.image_size;
    let mut psnr_sum = vec![0f64; depth];
    let mut ssim_sum = vec![0f64; depth];
    let mut counts: Vec<std::collections::HashMap<u32, usize>> = vec![Default::default(); depth];
    let v = model.codebook().len();
    let classes = data.class_names.len();
    let k = k.clamp(1, v);
    let mut rel_sum = vec![0f64; depth];
    let mut hit_sum = vec![0f64; depth];
    let mut class_rel = vec![0f64; classes * v];
    // Per layer: (image label, word index) of every token, for the class-level rates.
    let mut tokens: Vec<Vec<(u32, u32)>> = vec![Vec::new(); depth];
    let bar = crate::progress::bar(n as u64, "images");
    for start in (0..n).step_by(batch_size.max(1)) {
        let idx: Vec<usize> = (start..(start + batch_size.max(1)).min(n)).collect();
        let x = data.batch(&idx, model.device())?;
        let q = model.quantize(&x, depth)?;
        let orig: Vec<f32> = x.flatten_all()?.to_vec1()?;
        let rel: Option<Vec<Vec<f32>>> = match scorer {
            Some(s) => Some(s.relevance(&x)?.to_vec2()?),
            None => None,
        };
        if let Some(rel) = &rel {
            for (row, &i) in rel.iter().zip(&idx) {
                let c = data.labels[i] as usize;
                for (acc, &r) in class_rel[c * v..(c + 1) * v].iter_mut().zip(row) {
                    *acc += r as f64;
                }
            }
        }
        for l in 0..depth {
            let y: Vec<f32> = model
                .decode(&model.decoder_input(&q, l + 1, None)?)?
                .clamp(0f32, 1f32)?
                .flatten_all()?
                .to_vec1()?;
            for i in 0..idx.len() {
                let (a, b) = (
                    &orig[i * plane..(i + 1) * plane],
                    &y[i * plane..(i + 1) * plane],
                );
                psnr_sum[l] += psnr(a, b);
                ssim_sum[l] += ssim_chw(a, b, cfg.in_channels, cfg.image_size, cfg.image_size);
            }
            let words: Vec<Vec<u32>> = q.indices[l].flatten_from(1)?.to_vec2()?;
            for (i, ws) in words.iter().enumerate() {
                if let Some(rel) = &rel {
                    let row = &rel[i];
                    let mut sorted = row.clone();
                    sorted.sort_by(|a, b| b.total_cmp(a));
                    let thresh = sorted[k - 1];
                    let m = ws.len().max(1) as f64;
                    rel_sum[l] += ws.iter().map(|&w| row[w as usize] as f64).sum::<f64>() / m;
                    hit_sum[l] +=
                        ws.iter().filter(|&&w| row[w as usize] >= thresh).count() as f64 / m;
                }
                for &w in ws {
                    *counts[l].entry(w).or_default() += 1;
                    tokens[l].push((data.labels[idx[i]], w));
                }
            }
        }
        bar.inc(idx.len() as u64);
    }
    bar.finish_and_clear();
    // Each class's top-k entries by mean relevance over its images.
    let class_top: Vec<HashSet<u32>> = (0..classes)
        .map(|c| {
            let row = &class_rel[c * v..(c + 1) * v];
            let mut order: Vec<u32> = (0..v as u32).collect();
            order.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]));
            order.into_iter().take(k).collect()
        })
        .collect();
    let nf = n.max(1) as f64;
    let rows: Vec<DepthRow> = (0..depth)
        .map(|l| {
            let total: usize = counts[l].values().sum();
            let (top, top_n) = counts[l]
                .iter()
                .max_by_key(|(e, c)| (**c, std::cmp::Reverse(**e)))
                .map_or((0, 0), |(e, c)| (*e, *c));
            let class_hits = tokens[l]
                .iter()
                .filter(|(c, w)| class_top[*c as usize].contains(w))
                .count();
            let mut per_class: Vec<HashSet<u32>> = vec![HashSet::new(); classes];
            for (c, w) in &tokens[l] {
                per_class[*c as usize].insert(*w);
            }
            let present: Vec<usize> = per_class
                .iter()
                .map(HashSet::len)
                .filter(|&x| x > 0)
                .collect();
            DepthRow {
                depth: l + 1,
                tokens: cfg.pyramid.tokens_up_to(l + 1),
                psnr: psnr_sum[l] / nf,
                ssim: ssim_sum[l] / nf,
                distinct_entries: counts[l].keys().collect::<HashSet<_>>().len(),
                top_word: model.codebook().word(top as usize).to_string(),
                top_word_share: top_n as f64 / total.max(1) as f64,
                mean_relevance: rel_sum[l] / nf,
                top_k_hit_rate: hit_sum[l] / nf,
                class_top_k_hit_rate: if scorer.is_some() {
                    class_hits as f64 / tokens[l].len().max(1) as f64
                } else {
                    0.0
                },
                distinct_per_class: present.iter().sum::<usize>() as f64
                    / present.len().max(1) as f64,
                top_k: k,
            }
        })
        .collect();
    Ok(rows)
}

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
pub fn parse_checkpoint(spec: &str) -> (String, CheckpointRef) {
    let (label, path) = match spec.split_once('=') {
        Some((l, p)) => (Some(l.to_string()), p),
        None => (None, spec),
    };
    if path == "builtin" {
        return (
            label.unwrap_or_else(|| "built-in".into()),
            CheckpointRef::or_default(None),
        );
    }
    let path = PathBuf::from(path);
    let label = label.unwrap_or_else(|| {
        path.file_stem().map_or_else(
            || path.display().to_string(),
            |s| s.to_string_lossy().into(),
        )
    });
    (label, CheckpointRef::or_default(Some(path)))
}

/// Evaluate (or read from `cache_dir`) one checkpoint on one data set.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_cached(
    label: &str,
    ckpt: &CheckpointRef,
    data_spec: &str,
    split: &str,
    limit: usize,
    scorer_spec: &str,
    top_k: usize,
    cache_dir: &Path,
) -> Result<TokenizerRow> {
    let sha = ckpt.sha256()?;
    let scorer_sha = crate::scorer::scorer_sha256(scorer_spec)?;
    let key = format!(
        "{}-{}-{split}-{limit}-k{top_k}-scorer{}.json",
        &sha[..12],
        slug(data_spec),
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
    let (model, _) = ckpt.load(&Device::Cpu)?;
    let data = data_for(&model, data_spec, split)?;
    let scorer = match scorer_spec {
        "none" => None,
        spec => Some(
            crate::scorer::load_scorer(spec, model.codebook(), data_spec)
                .with_context(|| format!("--scorer {spec}"))?,
        ),
    };
    let n = limit.min(data.len());
    tracing::info!("{label} on {data_spec}: {n} images");
    let depths = depth_rows(&model, &data, n, scorer.as_ref(), top_k, 64)?;
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
    write_atomic(&cached, &serde_json::to_string_pretty(&row)?)?;
    Ok(row)
}

/// Several checkpoints on several data sets, side by side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableTokenizerConfig {
    /// `LABEL=PATH`, `PATH` or `builtin` (see [`parse_checkpoint`]); empty: the built-in one.
    pub checkpoints: Vec<String>,
    /// Data specs (`mnist`, `fashion-mnist`, `easy-vqa`, `folder:DIR`).
    pub data: Vec<String>,
    pub split: String,
    /// Evaluate the first N images of each set.
    pub limit: usize,
    /// Scorer of the relevance columns: `default` (built in), a path, or `none`.
    pub scorer: String,
    pub top_k: usize,
    pub out: PathBuf,
}

impl Default for TableTokenizerConfig {
    fn default() -> Self {
        Self {
            checkpoints: Vec::new(),
            data: vec!["mnist".into(), "fashion-mnist".into()],
            split: "test".into(),
            limit: 1000,
            scorer: "default".into(),
            top_k: 50,
            out: crate::store::default_out(&["tokenizer"]),
        }
    }
}

/// Writes `table-tokenizer.md` and `.json` into `args.out`; returns the markdown.
pub fn table_tokenizer(args: &TableTokenizerConfig) -> Result<String> {
    let specs = if args.checkpoints.is_empty() {
        vec!["builtin".to_string()]
    } else {
        args.checkpoints.clone()
    };
    let checkpoints: Vec<(String, CheckpointRef)> =
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
        invocation("table-tokenizer")
    );
    for r in &rows {
        md.push_str(&format!(
            "\n## {} on {} ({} images, checkpoint sha256 {})\n\n",
            r.checkpoint,
            r.data,
            r.images,
            &r.checkpoint_sha256[..12]
        ));
        md.push_str(&markdown(&r.depths));
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("{}", args.out.display()))?;
    write_atomic(&args.out.join("table-tokenizer.md"), &md)?;
    write_atomic(
        &args.out.join("table-tokenizer.json"),
        &serde_json::to_string_pretty(&serde_json::json!({ "rows": rows }))?,
    )?;
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_specs_take_a_label_a_path_or_builtin() {
        let (l, c) = parse_checkpoint("builtin");
        assert_eq!((l.as_str(), c.path), ("built-in", None));
        let (l, c) = parse_checkpoint("LQAE-style=runs/lqae/checkpoint.safetensors");
        assert_eq!(l, "LQAE-style");
        assert_eq!(
            c.path.as_deref(),
            Some(Path::new("runs/lqae/checkpoint.safetensors"))
        );
        let (l, _) = parse_checkpoint("checkpoints/spae-smollm2.safetensors");
        assert_eq!(l, "spae-smollm2");
    }
}
