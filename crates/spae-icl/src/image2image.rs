//! `spae-icl image-to-image`: denoising and inpainting by in-context learning (SPAE.md
//! section 6). The prompt holds pairs "corrupted words -> clean words" of training images,
//! ordered from the most to the least corrupted, then the corrupted query; the frozen LLM
//! writes the clean image's words layer by layer (progressive decoding, as `generate`), and
//! the decoder turns them into pixels.
//!
//! Reported per image and on average: PSNR to the clean image of the corrupted input, of the
//! tokenizer's own reconstruction of the corrupted input at the same depth (the "copy the
//! query's words" baseline: how much the tokenizer alone cleans), of the LLM's output, and of
//! the clean image's reconstruction at that depth (the ceiling the words allow).

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use prompt::{ImagePair, ImageToImageContext};
use rand::rngs::StdRng;
use rand::seq::index;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use spae_core::metrics::psnr;
use spae_datasets::Split;

use crate::cli::{Corruption, ImageToImageArgs};
use crate::generate::{entries_as_words, words_up_to, Generated, Generator};
use crate::run::words::ImageWords;

const TEMPLATE: &str = "image_to_image";

/// Corrupt `x` (C, S, S) in [0, 1] at `level` in [0, 1] of the task's strength.
fn corrupt(
    x: &[f32],
    size: usize,
    task: Corruption,
    level: f64,
    strength: f64,
    rng: &mut StdRng,
) -> Vec<f32> {
    match task {
        Corruption::Denoise => {
            // Gaussian noise, sigma = level * strength (Box-Muller), clipped to [0, 1].
            let sigma = level * strength;
            x.iter()
                .map(|&v| {
                    let (u1, u2): (f64, f64) = (rng.gen_range(1e-12..1.0), rng.gen());
                    let n = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                    (v as f64 + sigma * n).clamp(0.0, 1.0) as f32
                })
                .collect()
        }
        Corruption::Inpaint => {
            // A mid-grey square of side level * strength * size at a random place.
            let side = ((level * strength * size as f64).round() as usize).min(size);
            let mut y = x.to_vec();
            if side == 0 {
                return y;
            }
            let (r0, c0) = (
                rng.gen_range(0..=size - side),
                rng.gen_range(0..=size - side),
            );
            let plane = size * size;
            for ch in 0..x.len() / plane {
                for r in r0..r0 + side {
                    for c in c0..c0 + side {
                        y[ch * plane + r * size + c] = 0.5;
                    }
                }
            }
            y
        }
    }
}

/// One query image's outcome, a line of `results.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ItemResult {
    item: usize,
    /// Index into the test split.
    image: usize,
    psnr_corrupted: f64,
    psnr_copy: f64,
    psnr_llm: f64,
    psnr_clean_words: f64,
    /// The LLM's words per layer, and how they were read.
    words: Vec<Vec<String>>,
    unknown: usize,
    filled_at_random: usize,
}

pub fn image_to_image(args: ImageToImageArgs) -> Result<()> {
    let g = Generator::new(
        &args.ckpt,
        &args.llm,
        &args.api,
        args.prompts.as_deref(),
        args.temperature,
        args.unconstrained,
    )?;
    let cfg = g.spae.config().clone();
    let depth = args.layers.unwrap_or(3.min(cfg.pyramid.depth()));
    cfg.pyramid
        .check_depth(depth)
        .with_context(|| format!("--layers {depth}"))?;
    if args.pairs == 0 {
        bail!("--pairs 0: the prompt needs at least one corrupted -> clean example");
    }
    if !(args.strength > 0.0 && args.strength <= 1.0) {
        bail!("--strength {}: expected a value in (0, 1]", args.strength);
    }
    let (size, channels) = (cfg.image_size, cfg.in_channels);
    let train = crate::train::load_data(&args.data, Split::Train, channels, size)?;
    let test = crate::train::load_data(&args.data, Split::Test, channels, size)?;
    if args.count > test.len() {
        bail!(
            "--count {}: the test split has {} images",
            args.count,
            test.len()
        );
    }
    let task = args.task;
    let out = args.out.clone().unwrap_or_else(|| {
        Path::new("eval/results").join(format!(
            "{}-{}-{}",
            task.name(),
            crate::run::slug(&args.data),
            crate::run::slug(&args.llm)
        ))
    });
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let identity = serde_json::json!({
        "task": task.name(), "data": args.data, "llm": args.llm, "checkpoint": g.checkpoint,
        "checkpoint_sha256": crate::tokens::checkpoint_sha256(&args.ckpt)?,
        "template_sha256": crate::run::sha256_hex(g.templates().source(TEMPLATE)?.as_bytes()),
        "pairs": args.pairs, "layers": depth, "strength": args.strength, "seed": args.seed,
        "temperature": args.temperature, "constrained": !args.unconstrained,
    });
    crate::run::results::check_identity(
        &out,
        &identity,
        &serde_json::json!({"count": args.count}),
    )?;
    let results_path = out.join("results.jsonl");
    let (mut done, mut file) =
        crate::run::results::resume_jsonl(&results_path, |r: &ItemResult| r.item)?;

    let plane = channels * size * size;
    let mut rng = StdRng::seed_from_u64(args.seed);
    let queries = index::sample(&mut rng, test.len(), args.count).into_vec();
    let bar = crate::progress::bar(args.count as u64, "images");
    let mut grid_rows: Vec<Tensor> = Vec::new();
    let rendered_ctx = ImageToImageContext {
        pairs: (0..args.pairs)
            .map(|k| ImagePair {
                input: prompt::image_slot(2 * k),
                output: prompt::image_slot(2 * k + 1),
            })
            .collect(),
        query: prompt::image_slot(2 * args.pairs),
        prefix: prompt::image_slot(2 * args.pairs + 1),
    };
    let rendered = g.templates().render(TEMPLATE, &rendered_ctx)?;
    for (item, &qi) in queries.iter().enumerate() {
        // Every item draws its own pairs and noise from (seed, item): a resumed run and a
        // fresh one see the same prompts.
        let mut irng = StdRng::seed_from_u64(args.seed ^ (0x9E37_79B9 * (item as u64 + 1)));
        let picked = index::sample(&mut irng, train.len(), args.pairs).into_vec();
        let clean_q: Vec<f32> = test.batch(&[qi], &Device::Cpu)?.flatten_all()?.to_vec1()?;
        let corrupted_q = corrupt(&clean_q, size, task, 1.0, args.strength, &mut irng);
        let record = if let Some(r) = done.get(&item) {
            r.clone()
        } else {
            // Pairs from the most corrupted (level 1) to the least (level 1/pairs).
            let clean_p: Vec<f32> = train
                .batch(&picked, &Device::Cpu)?
                .flatten_all()?
                .to_vec1()?;
            let mut inputs = Vec::with_capacity(args.pairs * plane);
            for k in 0..args.pairs {
                let level = (args.pairs - k) as f64 / args.pairs as f64;
                inputs.extend(corrupt(
                    &clean_p[k * plane..(k + 1) * plane],
                    size,
                    task,
                    level,
                    args.strength,
                    &mut irng,
                ));
            }
            let shape = (args.pairs, channels, size, size);
            let pin = g
                .spae
                .tokenize(&Tensor::from_vec(inputs, shape, &Device::Cpu)?, depth)?;
            let pout = g
                .spae
                .tokenize(&Tensor::from_vec(clean_p, shape, &Device::Cpu)?, depth)?;
            let qt = g.spae.tokenize(
                &Tensor::from_vec(corrupted_q.clone(), (1, channels, size, size), &Device::Cpu)?,
                depth,
            )?;
            let query_words = words_up_to(&qt[0], depth);
            let mut written = Generated::empty(task.name());
            for layer in 0..depth {
                let context: Vec<(ImageWords, ImageWords)> = pin
                    .iter()
                    .zip(&pout)
                    .map(|(a, b)| (words_up_to(a, depth), words_up_to(b, layer + 1)))
                    .collect();
                let prefix =
                    entries_as_words(g.spae.codebook(), written.entries.iter().flatten().copied());
                let mut slots: Vec<&ImageWords> =
                    context.iter().flat_map(|(a, b)| [a, b]).collect();
                slots.push(&query_words);
                slots.push(&prefix);
                let seed = args
                    .seed
                    .wrapping_mul(1_000_003)
                    .wrapping_add((item * 64 + layer) as u64);
                g.write_layer(
                    &rendered,
                    &slots,
                    cfg.pyramid.layer_len(layer),
                    seed,
                    &mut irng,
                    &mut written,
                )
                .with_context(|| format!("image {item}, layer {}", layer + 1))?;
            }
            let llm_px: Vec<f32> = g
                .decode(&[written.entries.clone()])?
                .flatten_all()?
                .to_vec1()?;
            let copy_px: Vec<f32> = g.spae.detokenize(&qt)?.flatten_all()?.to_vec1()?;
            let clean_t =
                Tensor::from_vec(clean_q.clone(), (1, channels, size, size), &Device::Cpu)?;
            let ceiling = g.spae.detokenize(&g.spae.tokenize(&clean_t, depth)?)?;
            let ceiling_px: Vec<f32> = ceiling.flatten_all()?.to_vec1()?;
            let clip = |v: Vec<f32>| v.into_iter().map(|x| x.clamp(0.0, 1.0)).collect::<Vec<_>>();
            let r = ItemResult {
                item,
                image: qi,
                psnr_corrupted: psnr(&clean_q, &corrupted_q),
                psnr_copy: psnr(&clean_q, &clip(copy_px)),
                psnr_llm: psnr(&clean_q, &clip(llm_px)),
                psnr_clean_words: psnr(&clean_q, &clip(ceiling_px)),
                words: written.layers.clone(),
                unknown: written.unknown.len(),
                filled_at_random: written.filled_at_random,
            };
            writeln!(file, "{}", serde_json::to_string(&r)?)
                .and_then(|_| file.flush())
                .with_context(|| format!("appending to {}", results_path.display()))?;
            r
        };
        if grid_rows.len() < 8 {
            // clean | corrupted | copy | LLM, for the first images.
            let t = |v: Vec<f32>| Tensor::from_vec(v, (1, channels, size, size), &Device::Cpu);
            let qt = g.spae.tokenize(&t(corrupted_q.clone())?, depth)?;
            let entries: Vec<Vec<usize>> = record
                .words
                .iter()
                .map(|l| {
                    l.iter()
                        .map(|w| g.spae.codebook().index_of_word(w).unwrap_or(0))
                        .collect()
                })
                .collect();
            grid_rows.push(Tensor::cat(
                &[
                    t(clean_q.clone())?,
                    t(corrupted_q.clone())?,
                    g.spae.detokenize(&qt)?.clamp(0f32, 1f32)?,
                    g.decode(&[entries])?.clamp(0f32, 1f32)?,
                ],
                3,
            )?);
        }
        done.insert(item, record);
        bar.inc(1);
    }
    bar.finish_and_clear();

    let rows: Vec<&ItemResult> = done.values().filter(|r| r.item < args.count).collect();
    let n = rows.len().max(1) as f64;
    let mean = |f: fn(&ItemResult) -> f64| rows.iter().map(|r| f(r)).sum::<f64>() / n;
    let (pc, pcopy, pllm, pceil) = (
        mean(|r| r.psnr_corrupted),
        mean(|r| r.psnr_copy),
        mean(|r| r.psnr_llm),
        mean(|r| r.psnr_clean_words),
    );
    let better_than_copy = rows.iter().filter(|r| r.psnr_llm > r.psnr_copy).count();
    let md = format!(
        "# Image-to-image in context: {task} on {data}, {llm}\n\n\
         {count} test images; {pairs} pairs in context (corruption from {strength} down to {min:.2} of it), \
         {depth} layers ({words} words per image); checkpoint `{ckpt}`.\n\
         Written by `spae-icl image-to-image {argv}`.\n\n\
         | output | PSNR to the clean image (dB) |\n|---|---|\n\
         | corrupted input | {pc:.2} |\n\
         | tokenizer on the corrupted input (copy the query's words) | {pcopy:.2} |\n\
         | **LLM output** | **{pllm:.2}** |\n\
         | tokenizer on the clean image (ceiling at this depth) | {pceil:.2} |\n\n\
         PSNR gain of the LLM over the corrupted input: {gain:+.2} dB; over copying the query's words: {gain_copy:+.2} dB \
         (better than the copy on {better} of {count} images). Unknown words: {unknown}; filled at random: {filled}.\n",
        task = task.name(),
        data = args.data,
        llm = args.llm,
        count = rows.len(),
        pairs = args.pairs,
        strength = args.strength,
        min = args.strength / args.pairs as f64,
        words = cfg.pyramid.tokens_up_to(depth),
        ckpt = g.checkpoint,
        argv = crate::run::invocation("image-to-image"),
        gain = pllm - pc,
        gain_copy = pllm - pcopy,
        better = better_than_copy,
        unknown = rows.iter().map(|r| r.unknown).sum::<usize>(),
        filled = rows.iter().map(|r| r.filled_at_random).sum::<usize>(),
    );
    crate::run::results::write_atomic(&out.join("summary.md"), &md)?;
    crate::run::results::write_atomic(
        &out.join("summary.json"),
        &serde_json::to_string_pretty(&serde_json::json!({
            "images": rows.len(), "psnr_corrupted": pc, "psnr_copy": pcopy, "psnr_llm": pllm,
            "psnr_clean_words": pceil, "llm_better_than_copy": better_than_copy,
        }))?,
    )?;
    if !grid_rows.is_empty() {
        // One row per image: clean | corrupted | copy | LLM.
        let grid = Tensor::cat(&grid_rows, 2)?.squeeze(0)?;
        spae_core::imageio::save_png(&grid, &out.join("examples.png"))?;
    }
    println!("{md}");
    println!("written: {}", out.join("summary.md").display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corruption_grows_with_its_level() {
        let x: Vec<f32> = (0..28 * 28).map(|i| (i % 28) as f32 / 27.0).collect();
        for task in [Corruption::Denoise, Corruption::Inpaint] {
            let mut rng = StdRng::seed_from_u64(1);
            let err = |y: &[f32]| x.iter().zip(y).map(|(a, b)| (a - b).powi(2)).sum::<f32>();
            let weak = corrupt(&x, 28, task, 0.2, 0.5, &mut rng);
            let strong = corrupt(&x, 28, task, 1.0, 0.5, &mut rng);
            assert!(err(&weak) < err(&strong), "{task:?}");
            assert!(strong.iter().all(|v| (0.0..=1.0).contains(v)));
            assert_eq!(
                corrupt(&x, 28, task, 0.0, 0.5, &mut rng),
                x,
                "{task:?} at level 0"
            );
        }
    }
}
