//! A visual-semantic embedding over a frozen ImageNet network: DeViSE (Frome et al.,
//! "DeViSE: A Deep Visual-Semantic Embedding Model", NeurIPS 2013). The pooled features of
//! a frozen ImageNet network ([`Backbone`]: torchvision's MobileNetV2, [`super::mobilenet`],
//! or EfficientNet-Lite2, [`super::efficientnet`]) are mapped by one trained linear layer
//! into the frozen all-MiniLM-L6-v2 space ([`super::text::SentenceEncoder`]), trained
//! contrastively on captions of the training classes' names as the scorer's tower is
//! ([`super::tower::TowerTrainer`]). Both sides are frozen, so the head learns only where
//! ImageNet's features point in the text space; it scores any word, including the names of
//! classes it never saw. Frome et al. train with a hinge rank loss against the label's
//! word vector; here the loss is the tower's softmax over every training class's caption.
//!
//! A checkpoint holds the head only (1280 x 384 weights, 2 MB) and names the backbone (its
//! kind, and the sha256 of its weights file).

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{linear, Linear, VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use super::efficientnet::{Config as EfficientNetConfig, EfficientNet};
use super::mobilenet::{Config as MobileNetConfig, MobileNetV2};
use super::text::{l2_normalize, SentenceEncoder};
use super::tower::{
    fill_vars, save_scorer, scorer_err, Captions, TowerStep, TowerTrainer, SCORER_FORMAT,
};
use super::training::{caption_table, draws, TowerTrainRun};
use super::{ImageTextModel, ZeroShotQuery};
use crate::{io_err, Result, SpaeError};

/// Metadata key of a DeViSE head's config in a scorer checkpoint.
const META_KEY: &str = "spae.devise";

/// Which frozen ImageNet network a DeViSE head reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BackboneKind {
    /// torchvision's MobileNetV2 (Sandler et al. 2018), 72.0% ImageNet top-1, at 224.
    #[default]
    #[serde(rename = "mobilenet-v2")]
    MobileNetV2,
    /// EfficientNet-Lite2 (Tan & Le 2019, Lite variant), 77.6% ImageNet top-1, at 260.
    #[serde(rename = "efficientnet-lite2")]
    EfficientNetLite2,
}

impl BackboneKind {
    /// The name checkpoints and the CLI use.
    pub fn name(self) -> &'static str {
        match self {
            Self::MobileNetV2 => "mobilenet-v2",
            Self::EfficientNetLite2 => "efficientnet-lite2",
        }
    }

    /// The side the network was trained at.
    pub fn native_size(self) -> usize {
        match self {
            Self::MobileNetV2 => MobileNetConfig::imagenet().input_size,
            Self::EfficientNetLite2 => EfficientNetConfig::lite2().input_size,
        }
    }
}

impl std::fmt::Display for BackboneKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A frozen ImageNet network whose pooled features a DeViSE head reads.
#[derive(Debug)]
pub enum Backbone {
    MobileNetV2(MobileNetV2),
    EfficientNet(EfficientNet),
}

impl From<MobileNetV2> for Backbone {
    fn from(net: MobileNetV2) -> Self {
        Self::MobileNetV2(net)
    }
}

impl From<EfficientNet> for Backbone {
    fn from(net: EfficientNet) -> Self {
        Self::EfficientNet(net)
    }
}

impl Backbone {
    /// The network `kind` from its weights file (`.pth`), resizing images to `input_size`.
    pub fn load(
        kind: BackboneKind,
        weights: &Path,
        input_size: usize,
        device: &Device,
    ) -> Result<Self> {
        Ok(match kind {
            BackboneKind::MobileNetV2 => backbone(weights, input_size, device)?.into(),
            BackboneKind::EfficientNetLite2 => {
                let cfg = EfficientNetConfig {
                    input_size,
                    ..EfficientNetConfig::lite2()
                };
                EfficientNet::load(weights, &cfg, device)?.into()
            }
        })
    }

    pub fn kind(&self) -> BackboneKind {
        match self {
            Self::MobileNetV2(_) => BackboneKind::MobileNetV2,
            Self::EfficientNet(_) => BackboneKind::EfficientNetLite2,
        }
    }

    /// Width of the pooled features.
    pub fn feature_dim(&self) -> usize {
        match self {
            Self::MobileNetV2(n) => n.config().last_channels,
            Self::EfficientNet(n) => n.config().head_channels,
        }
    }

    /// Side images are resized to.
    pub fn input_size(&self) -> usize {
        match self {
            Self::MobileNetV2(n) => n.config().input_size,
            Self::EfficientNet(n) => n.config().input_size,
        }
    }

    /// Images (B, C, S, S) in [0, 1], C = 1 or 3 -> pooled features (B, feature_dim).
    pub fn features(&self, images: &Tensor) -> Result<Tensor> {
        match self {
            Self::MobileNetV2(n) => n.features(images),
            Self::EfficientNet(n) => n.features(images),
        }
    }

    /// An error unless this is the network `cfg`'s head was trained on: its kind, feature
    /// width and input side.
    pub fn check_reads(&self, cfg: &DeviseConfig) -> Result<()> {
        let (kind, f, s) = (self.kind(), self.feature_dim(), self.input_size());
        if kind != cfg.backbone || f != cfg.feature_dim || s != cfg.input_size {
            return Err(SpaeError::Config(format!(
                "the DeViSE head reads {} features of {} at {}x{}, the network gives {f} of \
                 {kind} at {s}x{s}",
                cfg.feature_dim, cfg.backbone, cfg.input_size, cfg.input_size
            )));
        }
        Ok(())
    }
}

/// Shape and provenance of a DeViSE head; stored in its checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviseConfig {
    /// Side images are resized to before the backbone (MobileNetV2 was trained at 224,
    /// EfficientNet-Lite2 at 260).
    pub input_size: usize,
    /// Width of the backbone's pooled features (1280 for both backbones).
    pub feature_dim: usize,
    /// Dimension of the text space (384 for MiniLM).
    pub embed_dim: usize,
    /// Softmax scale on cosines, in training and zero-shot queries.
    pub logit_scale: f64,
    /// The frozen text encoder the head maps into.
    pub text_model: String,
    pub captions: Captions,
    /// sha256 of the backbone's weights file (`mobilenet_v2-b0353104.pth`, ...).
    pub backbone_sha256: String,
    /// The backbone network; checkpoints written before there was a choice have none and
    /// read MobileNetV2.
    #[serde(default)]
    pub backbone: BackboneKind,
}

/// The trained part: pooled features (B, feature_dim) -> unit embeddings (B, embed_dim).
pub struct DeviseHead {
    cfg: DeviseConfig,
    varmap: VarMap,
    proj: Linear,
}

impl std::fmt::Debug for DeviseHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviseHead")
            .field("config", &self.cfg)
            .finish()
    }
}

impl DeviseHead {
    pub fn new(cfg: DeviseConfig, device: &Device) -> Result<Self> {
        if cfg.feature_dim == 0 || cfg.embed_dim == 0 || cfg.input_size == 0 {
            return Err(SpaeError::Config(format!(
                "DeViSE head {cfg:?} has an empty dimension"
            )));
        }
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let proj = linear(cfg.feature_dim, cfg.embed_dim, vb.pp("proj"))?;
        Ok(Self { cfg, varmap, proj })
    }

    pub fn config(&self) -> &DeviseConfig {
        &self.cfg
    }

    /// Pooled backbone features (B, feature_dim) -> unit embeddings (B, embed_dim).
    pub fn forward(&self, features: &Tensor) -> Result<Tensor> {
        l2_normalize(&self.proj.forward(features)?)
    }

    /// Write the head (weights + config) atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_string(&self.cfg).map_err(|e| scorer_err(path, e))?;
        save_scorer(&self.varmap, path, META_KEY, json)
    }

    /// Read a head written by [`DeviseHead::save`] from `bytes`; `path` names them in errors.
    pub fn load_bytes(bytes: &[u8], path: &Path, device: &Device) -> Result<Self> {
        let cfg = read_config(bytes, path)?.ok_or_else(|| {
            scorer_err(
                path,
                "a scorer checkpoint, but not a DeViSE head (no spae.devise)",
            )
        })?;
        let head = Self::new(cfg, device)?;
        fill_vars(&head.varmap, bytes, path, device)?;
        Ok(head)
    }

    /// [`DeviseHead::load_bytes`] from a file.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(io_err(path))?;
        Self::load_bytes(&bytes, path, device)
    }
}

/// The DeViSE config of a scorer checkpoint, or `None` when it is another scorer (the
/// trained tower). An error when `bytes` are not a scorer checkpoint at all.
pub fn read_config(bytes: &[u8], path: &Path) -> Result<Option<DeviseConfig>> {
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| scorer_err(path, format!("not a safetensors file: {e}")))?;
    let meta = header.metadata().clone().unwrap_or_default();
    if meta.get("spae.format").map(String::as_str) != Some(SCORER_FORMAT) {
        return Err(scorer_err(path, "not a spae-icl scorer checkpoint"));
    }
    meta.get(META_KEY)
        .map(|json| {
            serde_json::from_str(json).map_err(|e| scorer_err(path, format!("{META_KEY}: {e}")))
        })
        .transpose()
}

/// The frozen ImageNet backbone, a trained head and the frozen sentence encoder: an
/// [`ImageTextModel`].
pub struct DeviseModel {
    net: Backbone,
    head: DeviseHead,
    text: SentenceEncoder,
}

impl std::fmt::Debug for DeviseModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviseModel")
            .field("head", &self.head)
            .finish()
    }
}

/// MobileNetV2 from `weights` (torchvision's `.pth`), resizing to `input_size`.
pub fn backbone(weights: &Path, input_size: usize, device: &Device) -> Result<MobileNetV2> {
    let cfg = MobileNetConfig {
        input_size,
        ..MobileNetConfig::imagenet()
    };
    MobileNetV2::load(weights, &cfg, device)
}

impl DeviseModel {
    /// `net` must give the features `head` was trained on (its kind, width and input size).
    pub fn new(net: impl Into<Backbone>, head: DeviseHead, text: SentenceEncoder) -> Result<Self> {
        let net = net.into();
        let h = head.config();
        net.check_reads(h)?;
        if text.dim() != h.embed_dim {
            return Err(SpaeError::Config(format!(
                "the DeViSE head maps into {} dims, the text encoder gives {}",
                h.embed_dim,
                text.dim()
            )));
        }
        Ok(Self { net, head, text })
    }

    pub fn head(&self) -> &DeviseHead {
        &self.head
    }
}

impl ImageTextModel for DeviseModel {
    fn embed_images(&self, images: &Tensor) -> Result<Tensor> {
        self.head.forward(&self.net.features(images)?)
    }
    fn embed_texts(&self, texts: &[&str]) -> Result<Tensor> {
        self.text.embed(texts)
    }
    fn text_model_id(&self) -> String {
        self.head.cfg.text_model.clone()
    }
    fn zero_shot(&self) -> ZeroShotQuery {
        ZeroShotQuery {
            captions: self.head.cfg.captions,
            logit_scale: self.head.cfg.logit_scale,
        }
    }
}

/// Trains a head on precomputed backbone `features` (N, feature_dim) labelled `labels`
/// (naming `class_names`), against `text`'s embeddings of five caption templates per class,
/// with the schedule of `run` (its `captions` must be `cfg.captions`).
pub fn train_head(
    run: &TowerTrainRun,
    cfg: DeviseConfig,
    features: &Tensor,
    labels: &[u32],
    class_names: &[String],
    text: &SentenceEncoder,
    on_step: &mut dyn FnMut(usize, &TowerStep) -> Result<()>,
) -> Result<DeviseHead> {
    let device = Device::Cpu;
    let (n, f) = features.dims2()?;
    if n != labels.len() || n == 0 || f != cfg.feature_dim {
        return Err(SpaeError::Config(format!(
            "{n} feature rows of width {f} for {} labels; the head reads width {}",
            labels.len(),
            cfg.feature_dim
        )));
    }
    if let Some(&l) = labels.iter().find(|&&l| l as usize >= class_names.len()) {
        return Err(SpaeError::Config(format!(
            "label {l} but only {} class names",
            class_names.len()
        )));
    }
    let table = caption_table(text, class_names, run.captions)?; // (T, C, D)
    let head = DeviseHead::new(cfg, &device)?;
    let mut trainer = TowerTrainer::for_vars(head.varmap.all_vars(), run.lr, head.cfg.logit_scale)?;
    let mut next = draws(run.seed);
    for step in 0..run.steps {
        trainer.set_lr(run.lr_at(step));
        let idx: Vec<u32> = (0..run.batch_size)
            .map(|_| (next() % n as u64) as u32)
            .collect();
        let tmpl: Vec<u32> = (0..idx.len()).map(|_| (next() % 5) as u32).collect();
        let x = features.index_select(&Tensor::new(idx.as_slice(), &device)?, 0)?;
        let batch_labels: Vec<u32> = idx.iter().map(|&i| labels[i as usize]).collect();
        let batch_labels = Tensor::new(batch_labels.as_slice(), &device)?;
        let s = trainer.step_templated(&head.forward(&x)?, &table, &tmpl, &batch_labels)?;
        on_step(step, &s)?;
    }
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(backbone: BackboneKind) -> DeviseConfig {
        DeviseConfig {
            input_size: backbone.native_size(),
            feature_dim: 1280,
            embed_dim: 384,
            logit_scale: 20.0,
            text_model: "test".into(),
            captions: Captions::Emoji,
            backbone_sha256: "test".into(),
            backbone,
        }
    }

    #[test]
    fn the_backbone_is_named_in_the_config_and_defaults_to_mobilenet() {
        let cfg = config(BackboneKind::EfficientNetLite2);
        let json = serde_json::to_value(&cfg).unwrap();
        assert_eq!(json["backbone"], "efficientnet-lite2");
        assert_eq!(json["input_size"], 260);
        let back: DeviseConfig = serde_json::from_value(json).unwrap();
        assert_eq!(back, cfg);
        // Heads written before the choice existed name no backbone: MobileNetV2.
        let mut old = serde_json::to_value(config(BackboneKind::MobileNetV2)).unwrap();
        old.as_object_mut().unwrap().remove("backbone");
        let old: DeviseConfig = serde_json::from_value(old).unwrap();
        assert_eq!(old.backbone, BackboneKind::MobileNetV2);
        let mut bad = serde_json::to_value(&cfg).unwrap();
        bad["backbone"] = "resnet-50".into();
        assert!(serde_json::from_value::<DeviseConfig>(bad).is_err());
    }

    #[test]
    fn a_head_refuses_another_backbone() {
        let dev = Device::Cpu;
        let net: Backbone = EfficientNet::new(
            &EfficientNetConfig::lite2(),
            VarBuilder::zeros(DType::F32, &dev),
        )
        .unwrap()
        .into();
        assert_eq!(net.kind(), BackboneKind::EfficientNetLite2);
        assert_eq!((net.feature_dim(), net.input_size()), (1280, 260));
        net.check_reads(&config(BackboneKind::EfficientNetLite2))
            .unwrap();
        // Same width and side, but trained on MobileNetV2 features.
        let mut cfg = config(BackboneKind::MobileNetV2);
        cfg.input_size = 260;
        let err = net.check_reads(&cfg).unwrap_err().to_string();
        assert!(
            err.contains("mobilenet-v2") && err.contains("efficientnet-lite2"),
            "{err}"
        );
    }
}
