//! A zero-shot image embedding in the sentence encoder's space by ConSE (Norouzi et al.,
//! "Zero-Shot Learning by Convex Combination of Semantic Embeddings", ICLR 2014,
//! arXiv 1312.5650): an ImageNet-1k classifier's probabilities weight the text embeddings of
//! its most probable class names,
//!
//! f(x) = 1/Z * sum_{t=1..T} p(y_t | x) s(y_t),  Z = sum_{t=1..T} p(y_t | x)
//!
//! (y_t the t-th most probable class, s its name's embedding; Norouzi et al. Eq. 1-2), here
//! scaled to unit length. The classifier is torchvision's MobileNetV2 ([`super::mobilenet`]),
//! the text side the frozen all-MiniLM-L6-v2 ([`super::text::SentenceEncoder`]), so the image
//! can be scored against any word, not only the 1,000 classes.

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::mobilenet::{Config as MobileNetConfig, MobileNetV2};
use super::text::{l2_normalize, SentenceEncoder};
use super::tower::Captions;
use super::training::TEXT_MODEL;
use super::{ImageTextModel, ZeroShotQuery};
use crate::{io_err, Result, SpaeError};

/// Number of ImageNet-1k classes the names file must list.
pub const IMAGENET_CLASSES: usize = 1000;

/// Softmax scale on cosines for zero-shot queries: the trained tower's fixed scale
/// (`TowerConfig::small`), as ConSE embeddings are compared with the same MiniLM captions.
pub const ZERO_SHOT_LOGIT_SCALE: f64 = 20.0;

/// Settings of a [`ConseModel`].
#[derive(Debug, Clone, PartialEq)]
pub struct ConseConfig {
    /// Side images are resized to before classification (MobileNetV2 was trained at 224).
    pub input_size: usize,
    /// T, the number of most probable classes combined (Norouzi et al. use T = 10).
    pub top: usize,
    /// Names the text encoder passed to [`ConseModel::load`]; the codebook-word cache is keyed
    /// by it ([`ImageTextModel::text_model_id`]). The word embeddings depend on the text encoder
    /// only, so ConSE and the trained tower share one cache when both use all-MiniLM-L6-v2.
    pub text_model: String,
    /// The zero-shot query's captions: the images' kind (photos, emoji) is the data's, not
    /// the teacher's.
    pub captions: Captions,
}

impl Default for ConseConfig {
    fn default() -> Self {
        Self {
            input_size: 224,
            top: 10,
            text_model: TEXT_MODEL.to_string(),
            captions: Captions::Labels,
        }
    }
}

/// ConSE over MobileNetV2 and a sentence encoder: an [`ImageTextModel`].
pub struct ConseModel {
    net: MobileNetV2,
    classes: Vec<String>,
    /// (1000, D) unit embeddings of the class names.
    class_text: Tensor,
    text: SentenceEncoder,
    top: usize,
    text_model: String,
    captions: Captions,
}

impl std::fmt::Debug for ConseModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConseModel")
            .field("text", &self.text)
            .field("top", &self.top)
            .field("input_size", &self.net.config().input_size)
            .finish()
    }
}

fn names_err(path: &Path, reason: impl std::fmt::Display) -> SpaeError {
    SpaeError::Scorer {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Read a JSON list of exactly 1,000 class names in class order.
pub fn read_class_names(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let names: Vec<String> = serde_json::from_str(&text)
        .map_err(|e| names_err(path, format!("not a JSON list of class names: {e}")))?;
    if names.len() != IMAGENET_CLASSES {
        return Err(names_err(
            path,
            format!(
                "lists {} class names, expected the {IMAGENET_CLASSES} ImageNet-1k classes",
                names.len()
            ),
        ));
    }
    if let Some(i) = names.iter().position(|n| n.trim().is_empty()) {
        return Err(names_err(path, format!("class {i} has an empty name")));
    }
    Ok(names)
}

impl ConseModel {
    /// MobileNetV2 weights (torchvision `.pth`), the class names (`imagenet1k_clean_names.json`)
    /// and a loaded sentence encoder. Embeds the 1,000 class names once, each as the plain
    /// name ("great white shark").
    pub fn load(
        weights: &Path,
        class_names_json: &Path,
        text: SentenceEncoder,
        cfg: ConseConfig,
        device: &Device,
    ) -> Result<Self> {
        if cfg.top == 0 || cfg.top > IMAGENET_CLASSES || cfg.input_size == 0 {
            return Err(SpaeError::Config(format!(
                "ConSE needs 1 <= top <= {IMAGENET_CLASSES} and a positive input size, got {cfg:?}"
            )));
        }
        let classes = read_class_names(class_names_json)?;
        let net_cfg = MobileNetConfig {
            input_size: cfg.input_size,
            ..MobileNetConfig::imagenet()
        };
        let net = MobileNetV2::load(weights, &net_cfg, device)?;
        let names: Vec<&str> = classes.iter().map(String::as_str).collect();
        let class_text = text.embed(&names)?.to_device(device)?;
        Ok(Self {
            net,
            classes,
            class_text,
            text,
            top: cfg.top,
            text_model: cfg.text_model,
            captions: cfg.captions,
        })
    }

    pub fn net(&self) -> &MobileNetV2 {
        &self.net
    }

    /// The class names, in class order.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// (1000, D) unit embeddings of the class names.
    pub fn class_embeddings(&self) -> &Tensor {
        &self.class_text
    }

    /// Images (B, C, S, S) in [0, 1] -> ImageNet-1k probabilities (B, 1000).
    pub fn class_probs(&self, images: &Tensor) -> Result<Tensor> {
        self.net.classify(images)
    }

    /// The `k` most probable classes of each image, most probable first, for reports.
    pub fn top_classes(&self, images: &Tensor, k: usize) -> Result<Vec<Vec<(String, f32)>>> {
        let probs: Vec<Vec<f32>> = self.class_probs(images)?.to_vec2()?;
        Ok(probs
            .iter()
            .map(|row| {
                top_k(row, k)
                    .into_iter()
                    .map(|i| (self.classes[i].clone(), row[i]))
                    .collect()
            })
            .collect())
    }
}

/// Indices of the `k` largest values, largest first (ties: lower index first).
fn top_k(row: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

impl ImageTextModel for ConseModel {
    /// ConSE (Norouzi et al. 2014, Eq. 2): the top-T probabilities weight the class-name
    /// embeddings. The paper divides by Z, the sum of the top-T probabilities; that is a
    /// positive scalar per image, which the final L2 normalisation removes, so the raw
    /// probabilities are used and only the unit vector is kept.
    fn embed_images(&self, images: &Tensor) -> Result<Tensor> {
        let probs: Vec<Vec<f32>> = self.class_probs(images)?.to_vec2()?;
        let n = self.classes.len();
        let mut weights = vec![0f32; probs.len() * n];
        for (row, w) in probs.iter().zip(weights.chunks_mut(n)) {
            for i in top_k(row, self.top) {
                w[i] = row[i];
            }
        }
        let weights = Tensor::from_vec(weights, (probs.len(), n), self.class_text.device())?;
        let emb = weights.matmul(&self.class_text)?;
        l2_normalize(&emb.to_dtype(DType::F32)?)
    }

    fn embed_texts(&self, texts: &[&str]) -> Result<Tensor> {
        self.text.embed(texts)
    }

    /// The text encoder's name only, as [`super::tower::TowerScorer`] reports it: the cached
    /// codebook-word embeddings are text embeddings, identical for both scorers when they
    /// share the encoder.
    fn text_model_id(&self) -> String {
        self.text_model.clone()
    }

    /// The configured captions and the trained tower's scale, since both compare cosines in
    /// the same MiniLM space.
    fn zero_shot(&self) -> ZeroShotQuery {
        ZeroShotQuery {
            captions: self.captions,
            logit_scale: ZERO_SHOT_LOGIT_SCALE,
        }
    }
}
