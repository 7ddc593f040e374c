//! `spae-icl eval-tokenizer`: reconstruction quality and codebook usage per pyramid depth.

use std::collections::HashSet;

use anyhow::{Context, Result};
use candle_core::Device;
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use spae_core::metrics::{psnr, ssim_chw};
use spae_core::SemanticScorer;

use crate::cli::{EvalTokenizerArgs, Format};

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

pub fn eval_tokenizer(args: EvalTokenizerArgs) -> Result<()> {
    let (model, label) = crate::tokens::load_checkpoint(&args.ckpt, &Device::Cpu)?;
    let data = data_for(&model, &args.data, &args.split)?;
    let n = args.limit.map_or(data.len(), |l| l.min(data.len()));
    let scorer = match args.scorer.as_str() {
        "none" => None,
        p => Some(
            crate::scorer::load_scorer(p, model.codebook())
                .with_context(|| format!("--scorer {p}"))?,
        ),
    };
    let k = args.top_k.min(model.codebook().len());
    let rows = depth_rows(&model, &data, n, scorer.as_ref(), k, args.batch_size)?;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Format::Text => {
            println!("{} on {} {} images ({})", label, n, args.split, data.name);
            print!("{}", markdown(&rows));
        }
    }
    Ok(())
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
        .map_err(anyhow::Error::msg)
        .context("--split")?;
    crate::train::load_data(spec, split, cfg.in_channels, cfg.image_size)
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
    scorer: Option<&spae_core::CodebookScorer<spae_core::scorer::tower::TowerScorer>>,
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
    let bar = ProgressBar::new(n as u64);
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
