//! `spae-icl eval-tokenizer`: reconstruction quality and codebook usage per pyramid depth.

use std::collections::HashSet;

use anyhow::{Context, Result};
use candle_core::Device;
use indicatif::ProgressBar;
use serde::Serialize;
use spae_core::metrics::{psnr, ssim_chw};
use spae_core::SpaeModel;

use crate::cli::{EvalTokenizerArgs, Format};

/// One row of the table: quality after `depth` layers, and usage of layer `depth`'s words.
#[derive(Debug, Serialize)]
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
}

pub fn eval_tokenizer(args: EvalTokenizerArgs) -> Result<()> {
    let path = crate::tokens::resolve_checkpoint(&args.ckpt)?;
    let model = SpaeModel::load(&path, &Device::Cpu)?;
    let cfg = model.config().clone();
    let split = args
        .split
        .parse()
        .map_err(anyhow::Error::msg)
        .context("--split")?;
    let data = crate::train::load_data(&args.data, split, cfg.in_channels, cfg.image_size)?;
    let n = args.limit.map_or(data.len(), |l| l.min(data.len()));
    let depth = cfg.pyramid.depth();
    let plane = cfg.in_channels * cfg.image_size * cfg.image_size;
    let mut psnr_sum = vec![0f64; depth];
    let mut ssim_sum = vec![0f64; depth];
    let mut counts: Vec<std::collections::HashMap<u32, usize>> = vec![Default::default(); depth];
    let bar = ProgressBar::new(n as u64);
    for start in (0..n).step_by(args.batch_size.max(1)) {
        let idx: Vec<usize> = (start..(start + args.batch_size).min(n)).collect();
        let x = data.batch(&idx, model.device())?;
        let q = model.quantize(&x, depth)?;
        let orig: Vec<f32> = x.flatten_all()?.to_vec1()?;
        for l in 0..depth {
            let y: Vec<f32> = model
                .decode(&q.recon[l])?
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
            for e in q.indices[l].flatten_all()?.to_vec1::<u32>()? {
                *counts[l].entry(e).or_default() += 1;
            }
        }
        bar.inc(idx.len() as u64);
    }
    bar.finish_and_clear();
    let rows: Vec<DepthRow> = (0..depth)
        .map(|l| {
            let total: usize = counts[l].values().sum();
            let (top, top_n) = counts[l]
                .iter()
                .max_by_key(|(e, c)| (**c, std::cmp::Reverse(**e)))
                .map_or((0, 0), |(e, c)| (*e, *c));
            DepthRow {
                depth: l + 1,
                tokens: cfg.pyramid.tokens_up_to(l + 1),
                psnr: psnr_sum[l] / n.max(1) as f64,
                ssim: ssim_sum[l] / n.max(1) as f64,
                distinct_entries: counts[l].keys().collect::<HashSet<_>>().len(),
                top_word: model.codebook().word(top as usize).to_string(),
                top_word_share: top_n as f64 / total.max(1) as f64,
            }
        })
        .collect();
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Format::Text => {
            println!(
                "{} on {} {} images ({})",
                path.display(),
                n,
                args.split,
                data.name
            );
            println!("| depth | tokens | PSNR (dB) | SSIM | distinct words in layer | most used word (share) |");
            println!("|---|---|---|---|---|---|");
            for r in &rows {
                println!(
                    "| {} | {} | {:.2} | {:.4} | {} | {} ({:.0}%) |",
                    r.depth,
                    r.tokens,
                    r.psnr,
                    r.ssim,
                    r.distinct_entries,
                    r.top_word,
                    100.0 * r.top_word_share
                );
            }
        }
    }
    Ok(())
}
