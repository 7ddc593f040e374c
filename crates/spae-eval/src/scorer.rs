//! The CLIP-style scorer of the semantic loss (paper Sec. 3.1, Eq. 3, with a small image tower
//! trained against a frozen sentence encoder in place of CLIP): its training, its zero-shot
//! accuracy, and the codebook words it finds relevant.

use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use spae_assets::AssetCache;
use spae_core::scorer::text::SentenceEncoder;
use spae_core::scorer::tower::{ImageTower, TowerConfig, TowerScorer, TowerTrainer};
use spae_core::{Codebook, CodebookScorer, ImageTextModel, SemanticScorer};
use spae_datasets::{LabeledImages, Split};

use crate::error::{Context, Result};
use crate::tokenizer::VocabConfig;

/// Name of the frozen text tower, as recorded in scorer checkpoints.
pub const TEXT_MODEL: &str = "all-MiniLM-L6-v2";

/// The zero-shot prompt of the issue: image vs "a photo of a {class}".
pub const ZERO_SHOT_TEMPLATE: &str = "a photo of a {}";

/// Caption templates per kind of class name **(ours)**: digits are written, clothes are
/// photographed, shapes are drawn. All sets have the same length, so a template index can be
/// drawn once per image.
pub fn templates_for(class: &str) -> [&'static str; 5] {
    const DIGITS: [&str; 10] = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    ];
    if DIGITS.contains(&class) {
        [
            "a handwritten {}",
            "the digit {}",
            "a photo of the number {}",
            "a drawing of a {}",
            "a black and white image of the number {}",
        ]
    } else if ["circle", "rectangle", "triangle", "shape"]
        .iter()
        .any(|s| class.split(' ').next_back() == Some(s))
    {
        // easy-VQA: "circle", or "red circle" when labelled by colour and shape.
        [
            "a {}",
            "a drawing of a {}",
            "an image of a {}",
            "a picture of a {} shape",
            "a simple {} on a plain background",
        ]
    } else {
        [
            "a photo of a {}",
            "a picture of a {}",
            "a black and white photo of a {}",
            "a photo of a {}, a type of clothing",
            "a small image of a {}",
        ]
    }
}

/// The frozen sentence encoder, fetched and cached on first use.
pub fn sentence_encoder(device: &Device) -> Result<SentenceEncoder> {
    let cache = AssetCache::from_env();
    let config = cache.fetch_named("minilm-l6-v2-config")?;
    let tokenizer = cache.fetch_named("minilm-l6-v2-tokenizer")?;
    let weights = cache.fetch_named("minilm-l6-v2-weights")?;
    Ok(SentenceEncoder::load(
        &config, &tokenizer, &weights, device,
    )?)
}

/// The scorer built into the binary (`checkpoints/README.md` says how it was trained).
const DEFAULT_SCORER: &[u8] =
    include_bytes!("../../../checkpoints/scorer-minilm-mnist-fashion.safetensors");

/// SHA-256 of the scorer `spec` names (`default`: the built-in bytes), to key cached results.
pub fn scorer_sha256(spec: &str) -> Result<String> {
    use sha2::{Digest, Sha256};
    match spec {
        "default" => Ok(hex::encode(Sha256::digest(DEFAULT_SCORER))),
        "none" => Ok("none".into()),
        path => crate::util::sha256_file(Path::new(path)),
    }
}

/// A trained tower, `default` (the built-in one) or a path, with the codebook's words
/// embedded (cached in $SPAE_HOME).
pub fn load_scorer(spec: &str, codebook: &Codebook) -> Result<CodebookScorer<TowerScorer>> {
    let device = Device::Cpu;
    let tower = match spec {
        "default" => ImageTower::load_bytes(
            DEFAULT_SCORER,
            Path::new("<built-in scorer-minilm-mnist-fashion>"),
            &device,
        )?,
        path => ImageTower::load(Path::new(path), &device)?,
    };
    let text = sentence_encoder(&device)?;
    let cache = spae_assets::default_home().join("cache").join(format!(
        "words-{}-{}.safetensors",
        codebook.info().source.replace(['/', ' '], "_"),
        codebook.len()
    ));
    Ok(CodebookScorer::new(
        TowerScorer { tower, text },
        codebook,
        Some(&cache),
    )?)
}

/// (T, C, D) caption embeddings: template t of class c.
fn caption_table(text: &SentenceEncoder, classes: &[String]) -> Result<Tensor> {
    let mut rows = Vec::new();
    for t in 0..5 {
        let caps: Vec<String> = classes
            .iter()
            .map(|c| templates_for(c)[t].replace("{}", c))
            .collect();
        let refs: Vec<&str> = caps.iter().map(String::as_str).collect();
        rows.push(text.embed(&refs)?);
    }
    Ok(Tensor::stack(&rows, 0)?)
}

/// A scorer's training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainScorerConfig {
    /// A data spec (`mnist+fashion-mnist`, `easy-vqa`, `folder:DIR`).
    pub data: String,
    pub image_size: usize,
    /// Channels of folder images (fetched sets keep their own).
    pub channels: usize,
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub seed: u64,
    /// The scorer checkpoint to write; metrics go beside it (`.metrics.jsonl`).
    pub out: PathBuf,
}

/// Zero-shot accuracy on one test set.
#[derive(Debug, Clone, Serialize)]
pub struct ZeroShot {
    pub data: String,
    pub split: &'static str,
    pub images: usize,
    pub accuracy: f64,
}

/// Trains the tower, writes it to `args.out`, and scores it zero-shot on each set's test split.
pub fn train_scorer(args: &TrainScorerConfig) -> Result<Vec<ZeroShot>> {
    let device = Device::Cpu;
    let (channels, size) = (args.channels, args.image_size);
    let data = spae_datasets::load_spec(&args.data, Split::Train, channels, size)?;
    let text = sentence_encoder(&device)?;
    let table = caption_table(&text, &data.class_names)?; // (T, C, D)
    let cfg = TowerConfig::small(data.channels, text.dim(), TEXT_MODEL);
    let tower = ImageTower::new(cfg, &device)?;
    let mut trainer = TowerTrainer::new(&tower, args.lr)?;
    let mut rng = args.seed ^ 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    if let Some(dir) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let metrics_path = args.out.with_extension("metrics.jsonl");
    let mut metrics = std::fs::File::create(&metrics_path)
        .with_context(|| format!("{}", metrics_path.display()))?;
    let bar = crate::progress::bar(args.steps as u64, "scorer steps");
    for step in 0..args.steps {
        // Cosine decay to a tenth.
        let t = step as f64 / args.steps.max(1) as f64;
        trainer.set_lr(args.lr * (0.1 + 0.45 * (1.0 + (std::f64::consts::PI * t).cos())));
        let idx: Vec<usize> = (0..args.batch_size)
            .map(|_| (next() % data.len() as u64) as usize)
            .collect();
        let x = data.batch(&idx, &device)?;
        let tmpl: Vec<u32> = (0..idx.len()).map(|_| (next() % 5) as u32).collect();
        let captions = table.index_select(&Tensor::new(tmpl.as_slice(), &device)?, 0)?; // (B, C, D)
        let labels: Vec<u32> = idx.iter().map(|&i| data.labels[i]).collect();
        let labels = Tensor::new(labels.as_slice(), &device)?;
        let s = trainer.step(&tower, &x, &captions, &labels)?;
        writeln!(
            metrics,
            "{}",
            serde_json::json!({"step": step, "loss": s.loss, "accuracy": s.accuracy})
        )?;
        bar.inc(1);
        bar.set_message(format!("loss {:.3} acc {:.2}", s.loss, s.accuracy));
    }
    bar.finish_and_clear();
    tower.save(&args.out)?;
    tracing::info!("wrote {}", args.out.display());
    let scorer = TowerScorer { tower, text };
    let mut out = Vec::new();
    for name in args.data.split('+') {
        let test = spae_datasets::load_spec(name, Split::Test, channels, size)?;
        out.push(ZeroShot {
            data: name.to_string(),
            split: "test",
            images: test.len(),
            accuracy: zero_shot(&scorer, &test)?,
        });
    }
    Ok(out)
}

/// (C, D) embeddings of "a photo of a {class}" for each class.
fn zero_shot_captions(model: &impl ImageTextModel, classes: &[String]) -> Result<Tensor> {
    let caps: Vec<String> = classes
        .iter()
        .map(|c| ZERO_SHOT_TEMPLATE.replace("{}", c))
        .collect();
    let refs: Vec<&str> = caps.iter().map(String::as_str).collect();
    Ok(model.embed_texts(&refs)?)
}

/// Zero-shot accuracy: each image against "a photo of a {class}" for all of its set's classes.
pub fn zero_shot(model: &impl ImageTextModel, data: &LabeledImages) -> Result<f64> {
    let text = zero_shot_captions(model, &data.class_names)?;
    let mut correct = 0usize;
    for start in (0..data.len()).step_by(512) {
        let idx: Vec<usize> = (start..(start + 512).min(data.len())).collect();
        let img = model.embed_images(&data.batch(&idx, &Device::Cpu)?)?;
        let pred: Vec<u32> = img.matmul(&text.t()?)?.argmax(1)?.to_vec1()?;
        correct += idx
            .iter()
            .zip(pred)
            .filter(|(&i, p)| data.labels[i] == *p)
            .count();
    }
    Ok(correct as f64 / data.len().max(1) as f64)
}

/// Per image of `data`: its `k` most relevant codebook entries (target weights from a softmax
/// of relevance at `temperature`) and the scorer's confidence in the image's own class
/// (softmax over the set's "a photo of a {class}" captions) **(ours)**.
///
/// Computed the first time training draws an image, then kept: a run of a few hundred steps
/// scores the images it sees instead of the whole set up front (120,000 images took minutes).
pub struct ImageTargets<'a> {
    scorer: &'a CodebookScorer<TowerScorer>,
    /// (C, D) zero-shot caption embeddings of the set's classes.
    text: Tensor,
    scale: f64,
    k: usize,
    temperature: f64,
    /// image index -> (entries, weights, confidence)
    rows: std::collections::HashMap<usize, (Vec<u32>, Vec<f32>, f32)>,
}

impl<'a> ImageTargets<'a> {
    pub fn new(
        scorer: &'a CodebookScorer<TowerScorer>,
        data: &LabeledImages,
        k: usize,
        temperature: f64,
    ) -> Result<Self> {
        Ok(Self {
            scorer,
            text: zero_shot_captions(scorer.model(), &data.class_names)?,
            scale: scorer.model().tower.config().logit_scale,
            k,
            temperature,
            rows: Default::default(),
        })
    }

    /// The targets of images `idx` of `data` (the set given to `new`), on `device`.
    pub fn batch(
        &mut self,
        data: &LabeledImages,
        idx: &[usize],
        device: &Device,
    ) -> Result<spae_core::SemanticTargets> {
        let mut missing: Vec<usize> = idx
            .iter()
            .copied()
            .filter(|i| !self.rows.contains_key(i))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        if !missing.is_empty() {
            self.compute(data, &missing)?;
        }
        let k = self.k;
        let mut ind = Vec::with_capacity(idx.len() * k);
        let mut w = Vec::with_capacity(idx.len() * k);
        let mut c = Vec::with_capacity(idx.len());
        for i in idx {
            let (ri, rw, rc) = &self.rows[i];
            ind.extend_from_slice(ri);
            w.extend_from_slice(rw);
            c.push(*rc);
        }
        Ok(spae_core::SemanticTargets {
            indices: Tensor::from_vec(ind, (idx.len(), k), device)?,
            weights: Tensor::from_vec(w, (idx.len(), k), device)?,
            confidence: Tensor::from_vec(c, idx.len(), device)?,
        })
    }

    fn compute(&mut self, data: &LabeledImages, idx: &[usize]) -> Result<()> {
        let device = Device::Cpu;
        let x = data.batch(idx, &device)?;
        let img = self.scorer.model().embed_images(&x)?;
        let rel = img.matmul(&self.scorer.word_embeddings().t()?)?;
        let (top, vals) = spae_core::scorer::top_relevant(&rel, self.k)?;
        let w = candle_nn_softmax(&(vals / self.temperature)?)?;
        let top: Vec<Vec<u32>> = top.to_vec2()?;
        let w: Vec<Vec<f32>> = w.to_vec2()?;
        let probs = candle_nn_softmax(&(img.matmul(&self.text.t()?)? * self.scale)?)?;
        let labels: Vec<u32> = idx.iter().map(|&i| data.labels[i]).collect();
        let conf = probs
            .gather(&Tensor::new(labels.as_slice(), &device)?.unsqueeze(1)?, 1)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        for (((&i, t), w), c) in idx.iter().zip(top).zip(w).zip(conf) {
            self.rows.insert(i, (t, w, c));
        }
        Ok(())
    }
}

fn candle_nn_softmax(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(1)?;
    let e = x.broadcast_sub(&max)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(1)?)?.to_dtype(DType::F32)?)
}

/// A class name, its most relevant codebook words, and their entry indices.
pub type ClassWords = (String, Vec<String>, Vec<u32>);

/// The `n` codebook words most relevant to the mean image embedding of each class.
pub fn class_top_words(
    scorer: &CodebookScorer<TowerScorer>,
    codebook: &Codebook,
    data: &LabeledImages,
    n: usize,
    per_class: usize,
) -> Result<Vec<ClassWords>> {
    let mut out = Vec::new();
    for (c, name) in data.class_names.iter().enumerate() {
        let idx: Vec<usize> = (0..data.len())
            .filter(|&i| data.labels[i] == c as u32)
            .take(per_class)
            .collect();
        if idx.is_empty() {
            continue;
        }
        let rel = scorer
            .relevance(&data.batch(&idx, &Device::Cpu)?)?
            .mean_keepdim(0)?;
        let (top, _) = spae_core::scorer::top_relevant(&rel, n)?;
        let ids: Vec<u32> = top.flatten_all()?.to_vec1()?;
        let words = ids
            .iter()
            .map(|&i| codebook.word(i as usize).to_string())
            .collect();
        out.push((name.clone(), words, ids));
    }
    Ok(out)
}

/// What `scorer_report` reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScorerReportConfig {
    /// `default` (built in) or a `train-scorer` checkpoint.
    pub scorer: String,
    pub data: String,
    pub vocab: VocabConfig,
    /// Words listed per class.
    pub words: usize,
    pub image_size: usize,
    pub channels: usize,
}

/// A scorer's zero-shot accuracy on each set's test split, then each class's most relevant
/// codebook words: one JSON value per line of the report.
pub fn scorer_report(args: &ScorerReportConfig) -> Result<Vec<serde_json::Value>> {
    let mut spec = args.vocab.clone();
    spec.max_entries = spec.max_entries.or(Some(crate::tokenizer::DEFAULT_ENTRIES));
    let codebook = spec.load(&Device::Cpu)?;
    let scorer = load_scorer(&args.scorer, &codebook)?;
    let mut lines = Vec::new();
    for name in args.data.split('+') {
        let (channels, size) = (args.channels, args.image_size);
        let test = spae_datasets::load_spec(name, Split::Test, channels, size)?;
        let acc = zero_shot(scorer.model(), &test)?;
        lines.push(serde_json::json!({"data": name, "split": "test", "images": test.len(), "zero_shot_accuracy": acc}));
        for (class, words, _) in class_top_words(&scorer, &codebook, &test, args.words, 200)? {
            lines.push(serde_json::json!({"data": name, "class": class, "top_words": words}));
        }
    }
    Ok(lines)
}
