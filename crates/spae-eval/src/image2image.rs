//! Denoising and inpainting by in-context learning, the image-to-image tasks of SPAE (Yu et
//! al., NeurIPS 2023, Sec. 4.3). The prompt holds pairs "corrupted words -> clean words" of
//! training images, ordered from the most to the least corrupted, then the corrupted query;
//! the frozen LLM writes the clean image's words layer by layer (progressive in-context
//! decoding, Sec. 3.3, as [`crate::generate`]), and the decoder turns them into pixels.
//!
//! Reported per image and on average: PSNR to the clean image of the corrupted input, of the
//! tokenizer's own reconstruction of the corrupted input at the same depth (the "copy the
//! query's words" baseline: how much the tokenizer alone cleans), of the LLM's output, and of
//! the clean image's reconstruction at that depth (the ceiling the words allow).

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use prompt::{ImagePair, ImageToImageContext};
use rand::rngs::StdRng;
use rand::seq::index;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use spae_core::metrics::psnr;
use spae_datasets::Split;

use crate::bail;
use crate::error::{Context, Result};
use crate::fewshot::words::ImageWords;
use crate::generate::{
    entries_as_words, entries_of_words, words_up_to, Generated, Generator, WriterConfig,
    DEFAULT_LAYERS,
};
use crate::store::{default_out, open_results, ResultStore};
use crate::util::{invocation, sha256_hex, slug, write_atomic};

/// The template an image-to-image prompt is rendered from.
pub const TEMPLATE: &str = "image_to_image";

/// Rows of `examples.png`: the first images of the run.
const GRID_ROWS: usize = 8;

/// What image-to-image undoes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Corruption {
    /// Gaussian pixel noise (sigma = strength at the query).
    #[default]
    Denoise,
    /// A mid-grey square (side = strength x image side at the query).
    Inpaint,
}

impl Corruption {
    pub const ALL: [Corruption; 2] = [Corruption::Denoise, Corruption::Inpaint];

    /// The name a flag and the result files take.
    pub fn name(self) -> &'static str {
        match self {
            Self::Denoise => "denoise",
            Self::Inpaint => "inpaint",
        }
    }
}

impl std::fmt::Display for Corruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

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

/// `image-to-image`: restore corrupted test images with corrupted -> clean pairs in context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageToImageConfig {
    pub task: Corruption,
    /// Corrupted -> clean pairs in context, from the most to the least corrupted.
    pub pairs: usize,
    /// Test images to restore.
    pub count: usize,
    /// Pyramid layers of every image in the prompt and of the output.
    pub layers: usize,
    /// Corruption of the query, in (0, 1]; the pairs go from it down to strength/pairs.
    pub strength: f64,
    /// Data, a spec of `spae_datasets::load_spec` (pairs from the training split, queries
    /// from the test split).
    pub data: String,
    /// The tokenizer and the LLM that write, and how they sample.
    #[serde(flatten)]
    pub writer: WriterConfig,
    /// Default: [`ImageToImageConfig::default_out`].
    pub out: Option<PathBuf>,
}

impl Default for ImageToImageConfig {
    fn default() -> Self {
        Self {
            task: Corruption::Denoise,
            pairs: 10,
            count: 20,
            layers: DEFAULT_LAYERS,
            strength: 0.5,
            data: "mnist".into(),
            // Greedy: the restored image should be the most likely one.
            writer: WriterConfig {
                temperature: 0.0,
                ..WriterConfig::default()
            },
            out: None,
        }
    }
}

impl ImageToImageConfig {
    /// `runs/image-to-image/<settings>`: one folder per setting, so a rerun resumes and
    /// settings never mix; the tokenizer is named by its checkpoint's hash.
    pub fn default_out(&self, checkpoint_sha256: &str) -> PathBuf {
        default_out(&[
            "image-to-image",
            &format!(
                "{}-{}-{}pairs-L{}-s{}-t{}-seed{}{}-{}-ckpt{}",
                self.task.name(),
                slug(&self.data),
                self.pairs,
                self.layers,
                self.strength,
                self.writer.temperature,
                self.writer.seed,
                if self.writer.unconstrained {
                    "-unconstrained"
                } else {
                    ""
                },
                slug(&self.writer.llm.name),
                checkpoint_sha256.get(..8).unwrap_or(checkpoint_sha256)
            ),
        ])
    }
}

/// One query image's outcome, a line of `results.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemResult {
    pub item: usize,
    /// Index into the test split.
    pub image: usize,
    pub psnr_corrupted: f64,
    pub psnr_copy: f64,
    pub psnr_llm: f64,
    pub psnr_clean_words: f64,
    /// The LLM's words per layer, and how they were read.
    pub words: Vec<Vec<String>>,
    pub unknown: usize,
    pub filled_at_random: usize,
}

/// What [`image_to_image`] measured and wrote.
#[derive(Debug, Clone)]
pub struct ImageToImageSummary {
    pub out: PathBuf,
    /// `summary.md`, which `spae-icl image-to-image` prints, then "written: <path>".
    pub markdown: String,
    pub summary_md: PathBuf,
    pub images: usize,
    /// Mean PSNR (dB) to the clean image.
    pub psnr_corrupted: f64,
    pub psnr_copy: f64,
    pub psnr_llm: f64,
    pub psnr_clean_words: f64,
    /// Images where the LLM beat copying the query's words.
    pub llm_better_than_copy: usize,
    /// Images the LLM restored in this run, and images read back from an earlier one.
    pub asked: usize,
    pub resumed: usize,
}

/// Restores `cfg.count` corrupted test images, each with its own `cfg.pairs` pairs in context.
/// Every finished image goes to `results.jsonl` at once, so a rerun restores only the images
/// missing. Writes `summary.md`, `summary.json` and `examples.png` (clean | corrupted | copy |
/// LLM, one row per image, the first eight).
pub fn image_to_image(cfg: &ImageToImageConfig) -> Result<ImageToImageSummary> {
    if cfg.pairs == 0 {
        bail!("--pairs 0: the prompt needs at least one corrupted -> clean example");
    }
    if !(cfg.strength > 0.0 && cfg.strength <= 1.0) {
        bail!("--strength {}: expected a value in (0, 1]", cfg.strength);
    }
    let g = Generator::new(&cfg.writer)?;
    let mc = g.reader.spae.config().clone();
    let depth = g.reader.depth(cfg.layers)?;
    let (size, channels) = (mc.image_size, mc.in_channels);
    let train = spae_datasets::load_spec(&cfg.data, Split::Train, channels, size)?;
    let test = spae_datasets::load_spec(&cfg.data, Split::Test, channels, size)?;
    if cfg.count > test.len() {
        bail!(
            "--count {}: the test split has {} images",
            cfg.count,
            test.len()
        );
    }
    if cfg.pairs > train.len() {
        bail!(
            "--pairs {}: the training split has {} images",
            cfg.pairs,
            train.len()
        );
    }
    let task = cfg.task;
    let checkpoint_sha256 = cfg.writer.checkpoint.sha256()?;
    let identity = serde_json::json!({
        "task": task.name(), "data": cfg.data, "llm": cfg.writer.llm.name, "checkpoint": g.reader.checkpoint,
        "checkpoint_sha256": checkpoint_sha256,
        "template_sha256": sha256_hex(g.reader.templates.source(TEMPLATE)?.as_bytes()),
        "pairs": cfg.pairs, "layers": depth, "strength": cfg.strength, "seed": cfg.writer.seed,
        "temperature": cfg.writer.temperature, "constrained": !cfg.writer.unconstrained,
    });
    let out = cfg
        .out
        .clone()
        .unwrap_or_else(|| cfg.default_out(&checkpoint_sha256));
    let mut store: ResultStore<ItemResult> = open_results(
        &out,
        &identity,
        &serde_json::json!({"count": cfg.count}),
        |r: &ItemResult| r.item,
    )?;

    let plane = channels * size * size;
    let mut rng = StdRng::seed_from_u64(cfg.writer.seed);
    let queries = index::sample(&mut rng, test.len(), cfg.count).into_vec();
    let bar = crate::progress::bar(cfg.count as u64, "images");
    let mut grid_rows: Vec<Tensor> = Vec::new();
    let rendered_ctx = ImageToImageContext {
        pairs: (0..cfg.pairs)
            .map(|k| ImagePair {
                input: prompt::image_slot(2 * k),
                output: prompt::image_slot(2 * k + 1),
            })
            .collect(),
        query: prompt::image_slot(2 * cfg.pairs),
        prefix: prompt::image_slot(2 * cfg.pairs + 1),
    };
    let rendered = g.reader.templates.render(TEMPLATE, &rendered_ctx)?;
    let (mut asked, mut resumed) = (0usize, 0usize);
    for (item, &qi) in queries.iter().enumerate() {
        // Every item draws its own pairs and noise from (seed, item): a resumed run and a
        // fresh one see the same prompts.
        let mut irng = StdRng::seed_from_u64(crate::util::item_seed(cfg.writer.seed, item));
        let picked = index::sample(&mut irng, train.len(), cfg.pairs).into_vec();
        let clean_q: Vec<f32> = test.batch(&[qi], &Device::Cpu)?.flatten_all()?.to_vec1()?;
        let corrupted_q = corrupt(&clean_q, size, task, 1.0, cfg.strength, &mut irng);
        let record = if let Some(r) = store.get(item) {
            resumed += 1;
            r.clone()
        } else {
            // Pairs from the most corrupted (level 1) to the least (level 1/pairs).
            let clean_p: Vec<f32> = train
                .batch(&picked, &Device::Cpu)?
                .flatten_all()?
                .to_vec1()?;
            let mut inputs = Vec::with_capacity(cfg.pairs * plane);
            for k in 0..cfg.pairs {
                let level = (cfg.pairs - k) as f64 / cfg.pairs as f64;
                inputs.extend(corrupt(
                    &clean_p[k * plane..(k + 1) * plane],
                    size,
                    task,
                    level,
                    cfg.strength,
                    &mut irng,
                ));
            }
            let shape = (cfg.pairs, channels, size, size);
            let pin = g
                .reader
                .spae
                .tokenize(&Tensor::from_vec(inputs, shape, &Device::Cpu)?, depth)?;
            let pout = g
                .reader
                .spae
                .tokenize(&Tensor::from_vec(clean_p, shape, &Device::Cpu)?, depth)?;
            let qt = g.reader.spae.tokenize(
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
                let prefix = entries_as_words(
                    g.reader.spae.codebook(),
                    written.entries.iter().flatten().copied(),
                );
                let mut slots: Vec<&ImageWords> =
                    context.iter().flat_map(|(a, b)| [a, b]).collect();
                slots.push(&query_words);
                slots.push(&prefix);
                let seed = crate::util::layer_seed(cfg.writer.seed, item, layer);
                g.write_layer(
                    &rendered,
                    &slots,
                    mc.pyramid.layer_len(layer),
                    seed,
                    &mut irng,
                    &mut written,
                )
                .with_context(|| {
                    format!(
                        "image {item}, layer {} (the {asked} images finished before it are saved in {}; rerun the same command to resume)",
                        layer + 1,
                        out.display()
                    )
                })?;
            }
            let llm_px: Vec<f32> = g
                .decode(&[written.entries.clone()])?
                .flatten_all()?
                .to_vec1()?;
            let copy_px: Vec<f32> = g.reader.spae.detokenize(&qt)?.flatten_all()?.to_vec1()?;
            let clean_t =
                Tensor::from_vec(clean_q.clone(), (1, channels, size, size), &Device::Cpu)?;
            let ceiling = g
                .reader
                .spae
                .detokenize(&g.reader.spae.tokenize(&clean_t, depth)?)?;
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
            store.append(r.clone())?;
            asked += 1;
            r
        };
        if grid_rows.len() < GRID_ROWS {
            // clean | corrupted | copy | LLM, for the first images.
            let t = |v: Vec<f32>| Tensor::from_vec(v, (1, channels, size, size), &Device::Cpu);
            let qt = g.reader.spae.tokenize(&t(corrupted_q.clone())?, depth)?;
            let entries = entries_of_words(g.reader.spae.codebook(), &record.words)
                .with_context(|| format!("{}: item {item}", store.path().display()))?;
            grid_rows.push(Tensor::cat(
                &[
                    t(clean_q.clone())?,
                    t(corrupted_q.clone())?,
                    g.reader.spae.detokenize(&qt)?.clamp(0f32, 1f32)?,
                    g.decode(&[entries])?.clamp(0f32, 1f32)?,
                ],
                3,
            )?);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    tracing::info!(
        "{} images: {asked} restored, {resumed} resumed from {}",
        cfg.count,
        out.display()
    );

    let rows: Vec<&ItemResult> = store
        .done()
        .values()
        .filter(|r| r.item < cfg.count)
        .collect();
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
        data = cfg.data,
        llm = cfg.writer.llm.name,
        count = rows.len(),
        pairs = cfg.pairs,
        strength = cfg.strength,
        min = cfg.strength / cfg.pairs as f64,
        words = mc.pyramid.tokens_up_to(depth),
        ckpt = g.reader.checkpoint,
        argv = invocation("image-to-image"),
        gain = pllm - pc,
        gain_copy = pllm - pcopy,
        better = better_than_copy,
        unknown = rows.iter().map(|r| r.unknown).sum::<usize>(),
        filled = rows.iter().map(|r| r.filled_at_random).sum::<usize>(),
    );
    let summary_md = out.join("summary.md");
    write_atomic(&summary_md, &md)?;
    write_atomic(
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
    Ok(ImageToImageSummary {
        out,
        markdown: md,
        summary_md,
        images: rows.len(),
        psnr_corrupted: pc,
        psnr_copy: pcopy,
        psnr_llm: pllm,
        psnr_clean_words: pceil,
        llm_better_than_copy: better_than_copy,
        asked,
        resumed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corruption_grows_with_its_level() {
        let x: Vec<f32> = (0..28 * 28).map(|i| (i % 28) as f32 / 27.0).collect();
        for task in Corruption::ALL {
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

    #[test]
    fn defaults_write_three_layers_under_runs_and_names_round_trip() {
        let cfg = ImageToImageConfig::default();
        assert_eq!((cfg.layers, cfg.pairs, cfg.count), (3, 10, 20));
        assert_eq!(
            cfg.default_out("414ea9e04a1f0000"),
            std::path::Path::new(
                "runs/image-to-image/denoise-mnist-10pairs-L3-s0.5-t0-seed0-local_gemma3-270m-ckpt414ea9e0"
            )
        );
        for c in Corruption::ALL {
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{c}\""));
            assert_eq!(serde_json::from_str::<Corruption>(&json).unwrap(), c);
        }
        let cfg: ImageToImageConfig = serde_json::from_str(r#"{"task": "inpaint"}"#).unwrap();
        assert_eq!(
            (cfg.task, cfg.layers),
            (Corruption::Inpaint, DEFAULT_LAYERS)
        );
    }

    /// A run killed while writing a line resumes from the lines before it.
    #[test]
    fn results_resume_past_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let id = serde_json::json!({"task": "denoise", "pairs": 10});
        let line = |item: usize| ItemResult {
            item,
            image: 40 + item,
            psnr_corrupted: 10.0,
            psnr_copy: 12.0,
            psnr_llm: 13.0,
            psnr_clean_words: 20.0,
            words: vec![vec!["cat".into()]],
            unknown: 0,
            filled_at_random: 0,
        };
        let mut store: ResultStore<ItemResult> = open_results(
            dir.path(),
            &id,
            &serde_json::json!({"count": 2}),
            |r: &ItemResult| r.item,
        )
        .unwrap();
        store.append(line(0)).unwrap();
        drop(store);
        let path = dir.path().join("results.jsonl");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"item\":1,\"image\":4");
        std::fs::write(&path, text).unwrap();
        let store: ResultStore<ItemResult> = open_results(
            dir.path(),
            &id,
            &serde_json::json!({"count": 5}),
            |r: &ItemResult| r.item,
        )
        .unwrap();
        assert_eq!(store.done().len(), 1);
        assert_eq!(store.get(0), Some(&line(0)));
        let other = serde_json::json!({"task": "denoise", "pairs": 4});
        let err =
            open_results::<ItemResult>(dir.path(), &other, &serde_json::json!({}), |r| r.item)
                .err()
                .unwrap()
                .to_string();
        assert!(err.contains("pairs: 10 -> 4"), "{err}");
    }
}
