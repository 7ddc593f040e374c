//! Training the scorer's image tower against a frozen sentence encoder on captions made from
//! class labels, standing in for CLIP's relevance (SPAE paper Sec. 3.1) where no CLIP weights
//! can be had; its zero-shot accuracy; and the relevance targets of the semantic loss.

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::text::SentenceEncoder;
use super::tower::{Captions, ImageTower, TowerConfig, TowerStep, TowerTrainer};
use super::{CodebookScorer, ImageTextModel, SemanticScorer};
use crate::{Codebook, LabeledPixels, Result};

/// Name of the frozen text tower, as recorded in scorer checkpoints.
pub const TEXT_MODEL: &str = "all-MiniLM-L6-v2";

impl Captions {
    /// The five caption templates of `class` ("{}" stands for the name) **(ours)**. All sets
    /// have the same length, so a template index can be drawn once per image.
    pub fn templates(self, class: &str) -> [&'static str; 5] {
        match self {
            Captions::Labels => templates_for(class),
            Captions::Emoji => [
                "an emoji of a {}",
                "a {} emoji",
                "a drawing of a {}",
                "an icon of a {}",
                "a cartoon {}",
            ],
        }
    }

    /// The zero-shot query: image vs this caption of every class.
    pub fn zero_shot(self) -> &'static str {
        match self {
            Captions::Labels => "a photo of a {}",
            Captions::Emoji => "an emoji of a {}",
        }
    }
}

/// Caption templates per kind of class name **(ours)**: digits are written, clothes are
/// photographed, shapes are drawn.
fn templates_for(class: &str) -> [&'static str; 5] {
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

/// (T, C, D) caption embeddings: template t of class c.
pub(crate) fn caption_table(
    text: &SentenceEncoder,
    classes: &[String],
    captions: Captions,
) -> Result<Tensor> {
    let mut rows = Vec::new();
    for t in 0..5 {
        let caps: Vec<String> = classes
            .iter()
            .map(|c| captions.templates(c)[t].replace("{}", c))
            .collect();
        let refs: Vec<&str> = caps.iter().map(String::as_str).collect();
        rows.push(text.embed(&refs)?);
    }
    Ok(Tensor::stack(&rows, 0)?)
}

/// The schedule of a tower's training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TowerTrainRun {
    pub steps: usize,
    pub batch_size: usize,
    /// Peak learning rate (cosine decay to a tenth).
    pub lr: f64,
    pub seed: u64,
    pub captions: Captions,
}

impl TowerTrainRun {
    /// The learning rate at `step`: cosine decay from `lr` to a tenth of it.
    pub fn lr_at(&self, step: usize) -> f64 {
        let t = step as f64 / self.steps.max(1) as f64;
        self.lr * (0.1 + 0.45 * (1.0 + (std::f64::consts::PI * t).cos()))
    }
}

/// xorshift64* seeded from `seed`: the draws of the shipped scorers' recipes.
pub(crate) fn draws(seed: u64) -> impl FnMut() -> u64 {
    let mut rng = seed ^ 0x9E37_79B9_7F4A_7C15;
    move || {
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Trains a new tower on `data` (labels naming `class_names`) against `text`'s embeddings of
/// five caption templates per class; `on_step` sees every step's numbers.
pub fn train_tower(
    run: &TowerTrainRun,
    data: &LabeledPixels,
    class_names: &[String],
    text: &SentenceEncoder,
    on_step: &mut dyn FnMut(usize, &TowerStep) -> Result<()>,
) -> Result<ImageTower> {
    let device = Device::Cpu;
    let table = caption_table(text, class_names, run.captions)?; // (T, C, D)
    let cfg = TowerConfig {
        captions: run.captions,
        ..TowerConfig::small(data.channels(), text.dim(), TEXT_MODEL)
    };
    let tower = ImageTower::new(cfg, &device)?;
    let mut trainer = TowerTrainer::new(&tower, run.lr)?;
    let mut next = draws(run.seed);
    for step in 0..run.steps {
        trainer.set_lr(run.lr_at(step));
        let idx: Vec<usize> = (0..run.batch_size)
            .map(|_| (next() % data.len() as u64) as usize)
            .collect();
        let x = data.batch(&idx)?;
        let tmpl: Vec<u32> = (0..idx.len()).map(|_| (next() % 5) as u32).collect();
        let captions = table.index_select(&Tensor::new(tmpl.as_slice(), &device)?, 0)?; // (B, C, D)
        let labels: Vec<u32> = idx.iter().map(|&i| data.labels()[i]).collect();
        let labels = Tensor::new(labels.as_slice(), &device)?;
        let s = trainer.step(&tower, &x, &captions, &labels)?;
        on_step(step, &s)?;
    }
    Ok(tower)
}

/// (C, D) embeddings of the zero-shot query of each class.
fn zero_shot_captions(
    model: &impl ImageTextModel,
    classes: &[String],
    captions: Captions,
) -> Result<Tensor> {
    let caps: Vec<String> = classes
        .iter()
        .map(|c| captions.zero_shot().replace("{}", c))
        .collect();
    let refs: Vec<&str> = caps.iter().map(String::as_str).collect();
    model.embed_texts(&refs)
}

/// Zero-shot accuracy: each image against the zero-shot query of all of its set's classes.
pub fn zero_shot(
    model: &impl ImageTextModel,
    data: &LabeledPixels,
    class_names: &[String],
    captions: Captions,
) -> Result<f64> {
    Ok(zero_shot_top_k(model, data, class_names, captions, &[1])?[0])
}

/// Zero-shot top-k accuracy for each k of `ks`: the share of images whose own class's query
/// is among their k best-scoring ones.
pub fn zero_shot_top_k(
    model: &impl ImageTextModel,
    data: &LabeledPixels,
    class_names: &[String],
    captions: Captions,
    ks: &[usize],
) -> Result<Vec<f64>> {
    let text = zero_shot_captions(model, class_names, captions)?;
    let mut hits = vec![0usize; ks.len()];
    for start in (0..data.len()).step_by(512) {
        let idx: Vec<usize> = (start..(start + 512).min(data.len())).collect();
        let img = model.embed_images(&data.batch(&idx)?)?;
        let scores: Vec<Vec<f32>> = img.matmul(&text.t()?)?.to_vec2()?;
        for (&i, row) in idx.iter().zip(&scores) {
            let own = row[data.labels()[i] as usize];
            // Rank of the own class: how many score strictly higher (ties count for it).
            let rank = row.iter().filter(|&&x| x > own).count();
            for (h, &k) in hits.iter_mut().zip(ks) {
                *h += (rank < k) as usize;
            }
        }
    }
    Ok(hits
        .into_iter()
        .map(|h| h as f64 / data.len().max(1) as f64)
        .collect())
}

/// Per image of `data`: its `k` most relevant codebook entries (target weights from a softmax
/// of relevance at `temperature`) and the scorer's confidence in the image's own class
/// (softmax over the set's zero-shot queries) **(ours)**.
///
/// Computed the first time training draws an image, then kept: a run of a few hundred steps
/// scores the images it sees instead of the whole set up front (120,000 images took minutes).
pub struct ImageTargets<'a, M> {
    scorer: &'a CodebookScorer<M>,
    /// (C, D) zero-shot caption embeddings of the set's classes.
    text: Tensor,
    scale: f64,
    k: usize,
    temperature: f64,
    /// Every image of a class gets the class's targets (`per_class`).
    per_class: bool,
    /// image index -> (entries, weights, confidence)
    rows: std::collections::HashMap<usize, (Vec<u32>, Vec<f32>, f32)>,
}

impl<'a, M: ImageTextModel> ImageTargets<'a, M> {
    pub fn new(
        scorer: &'a CodebookScorer<M>,
        class_names: &[String],
        k: usize,
        temperature: f64,
    ) -> Result<Self> {
        let query = scorer.model().zero_shot();
        Ok(Self {
            scorer,
            text: zero_shot_captions(scorer.model(), class_names, query.captions)?,
            scale: query.logit_scale,
            k,
            temperature,
            per_class: false,
            rows: Default::default(),
        })
    }

    /// Targets per class instead of per image **(ours)**: every image of a class gets the
    /// entries most relevant to the mean of its class's relevances (and their mean
    /// confidence). Where a class holds one concept in several drawing styles, each style is
    /// then taught the same words, and the encoder learns words that do not change with the
    /// style: what few-shot matching across styles reads.
    pub fn per_class(mut self, on: bool) -> Self {
        self.per_class = on;
        self
    }

    /// The targets of images `idx` of `data` (the set given to `new`), on `device`.
    pub fn batch(
        &mut self,
        data: &LabeledPixels,
        idx: &[usize],
        device: &Device,
    ) -> Result<crate::SemanticTargets> {
        let missing = crate::images::not_kept(&self.rows, idx);
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
        Ok(crate::SemanticTargets {
            indices: Tensor::from_vec(ind, (idx.len(), k), device)?,
            weights: Tensor::from_vec(w, (idx.len(), k), device)?,
            confidence: Tensor::from_vec(c, idx.len(), device)?,
        })
    }

    fn compute(&mut self, data: &LabeledPixels, idx: &[usize]) -> Result<()> {
        if !self.per_class {
            return self.compute_images(data, idx);
        }
        for &i in idx {
            if self.rows.contains_key(&i) {
                continue;
            }
            let class = data.labels()[i];
            let members: Vec<usize> = (0..data.len())
                .filter(|&j| data.labels()[j] == class)
                .collect();
            // A class of a large set (6,000 MNIST digits) is embedded a slice at a time.
            let (mut rel_sum, mut conf_sum) = (None, 0f32);
            for chunk in members.chunks(256) {
                let img = self.scorer.model().embed_images(&data.batch(chunk)?)?;
                let rel = self.scorer.relevance_of_embeddings(&img)?.sum_keepdim(0)?;
                rel_sum = Some(match rel_sum {
                    Some(s) => (s + rel)?,
                    None => rel,
                });
                conf_sum += self
                    .confidence(&img, &vec![class; chunk.len()])?
                    .iter()
                    .sum::<f32>();
            }
            let Some(rel_sum) = rel_sum else {
                continue;
            };
            let n = members.len() as f64;
            let (top, vals) = super::top_relevant(&(rel_sum / n)?, self.k)?;
            let w = candle_nn_softmax(&(vals / self.temperature)?)?;
            let top: Vec<u32> = top.flatten_all()?.to_vec1()?;
            let w: Vec<f32> = w.flatten_all()?.to_vec1()?;
            let conf = conf_sum / members.len() as f32;
            for j in members {
                self.rows.insert(j, (top.clone(), w.clone(), conf));
            }
        }
        Ok(())
    }

    /// Each image embedding's zero-shot probability of its class in `labels`.
    fn confidence(&self, img: &Tensor, labels: &[u32]) -> Result<Vec<f32>> {
        let probs = candle_nn_softmax(&(img.matmul(&self.text.t()?)? * self.scale)?)?;
        let labels = Tensor::new(labels, &Device::Cpu)?.unsqueeze(1)?;
        Ok(probs.gather(&labels, 1)?.flatten_all()?.to_vec1::<f32>()?)
    }

    fn compute_images(&mut self, data: &LabeledPixels, idx: &[usize]) -> Result<()> {
        let x = data.batch(idx)?;
        let img = self.scorer.model().embed_images(&x)?;
        let rel = self.scorer.relevance_of_embeddings(&img)?;
        let (top, vals) = super::top_relevant(&rel, self.k)?;
        let w = candle_nn_softmax(&(vals / self.temperature)?)?;
        let top: Vec<Vec<u32>> = top.to_vec2()?;
        let w: Vec<Vec<f32>> = w.to_vec2()?;
        let labels: Vec<u32> = idx.iter().map(|&i| data.labels()[i]).collect();
        let conf = self.confidence(&img, &labels)?;
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
pub fn class_top_words<M: ImageTextModel>(
    scorer: &CodebookScorer<M>,
    codebook: &Codebook,
    data: &LabeledPixels,
    class_names: &[String],
    n: usize,
    per_class: usize,
) -> Result<Vec<ClassWords>> {
    let mut out = Vec::new();
    for (c, name) in class_names.iter().enumerate() {
        let idx: Vec<usize> = (0..data.len())
            .filter(|&i| data.labels()[i] == c as u32)
            .take(per_class)
            .collect();
        if idx.is_empty() {
            continue;
        }
        let rel = scorer.relevance(&data.batch(&idx)?)?.mean_keepdim(0)?;
        let (top, _) = super::top_relevant(&rel, n)?;
        let ids: Vec<u32> = top.flatten_all()?.to_vec1()?;
        let words = ids
            .iter()
            .map(|&i| codebook.word(i as usize).to_string())
            .collect();
        out.push((name.clone(), words, ids));
    }
    Ok(out)
}
