//! The CLIP-style scorer trained here **(ours)**: a small CNN image tower aligned to a frozen
//! sentence encoder, standing in for the paper's CLIP relevance (SPAE paper, Sec. 3.1), because
//! no CLIP weights can be had offline. Trained contrastively on captions made from labels with
//! several templates per class: each image against every class's caption in its template,
//! softmax over classes.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{linear, AdamW, Linear, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use super::text::{l2_normalize, SentenceEncoder};
use super::ImageTextModel;
use crate::patch::{dense, space_to_depth, Conv3};
use crate::{io_err, Result, SpaeError};

/// Format tag of a scorer checkpoint.
pub const SCORER_FORMAT: &str = "spae-icl-scorer";

/// Shape of the image tower; stored in its checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TowerConfig {
    pub in_channels: usize,
    /// Width of each stage; every stage first halves the side (2x2 space-to-depth), then
    /// runs a 3x3 convolution (the matmul convolution of `crate::patch`).
    pub channels: Vec<usize>,
    /// Dimension of the text space it is aligned to (384 for MiniLM).
    pub embed_dim: usize,
    /// Softmax scale on cosines (CLIP's learned logit scale, fixed here).
    pub logit_scale: f64,
    /// Which frozen text encoder the tower was aligned to.
    pub text_model: String,
    /// Which captions it was trained on, so zero-shot queries read like them.
    #[serde(default)]
    pub captions: Captions,
}

/// The caption templates a tower is trained on, and the zero-shot query that matches them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Captions {
    /// By the kind of class name: digits are written, shapes drawn, anything else
    /// photographed; zero-shot "a photo of a {}".
    #[default]
    Labels,
    /// Emoji: drawings of named concepts; zero-shot "an emoji of a {}".
    Emoji,
}

impl TowerConfig {
    /// The tower used for 28x28 gray digits and clothes.
    pub fn small(in_channels: usize, embed_dim: usize, text_model: &str) -> Self {
        Self {
            in_channels,
            channels: vec![48, 96],
            embed_dim,
            logit_scale: 20.0,
            text_model: text_model.to_string(),
            captions: Captions::Labels,
        }
    }
}

/// Image (B, C, S, S) in [0, 1] -> unit embedding (B, embed_dim) in the text space.
pub struct ImageTower {
    cfg: TowerConfig,
    varmap: VarMap,
    /// Per stage: the linear map of the 2x2 space-to-depth, then a 3x3 convolution.
    stages: Vec<(Linear, Conv3)>,
    proj: Linear,
}

impl std::fmt::Debug for ImageTower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageTower")
            .field("config", &self.cfg)
            .finish()
    }
}

impl ImageTower {
    pub fn new(cfg: TowerConfig, device: &Device) -> Result<Self> {
        if cfg.channels.is_empty() || cfg.embed_dim == 0 {
            return Err(SpaeError::Config(format!(
                "tower config {cfg:?} has no layers"
            )));
        }
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let mut stages = Vec::new();
        let mut cin = cfg.in_channels;
        for (i, &c) in cfg.channels.iter().enumerate() {
            let vb_s = vb.pp(format!("stages.{i}"));
            stages.push((
                linear(4 * cin, c, vb_s.pp("down"))?,
                Conv3::new(c, c, vb_s.pp("conv"))?,
            ));
            cin = c;
        }
        let proj = linear(cin, cfg.embed_dim, vb.pp("proj"))?;
        Ok(Self {
            cfg,
            varmap,
            stages,
            proj,
        })
    }

    pub fn config(&self) -> &TowerConfig {
        &self.cfg
    }

    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// Unit embeddings (B, embed_dim).
    pub fn forward(&self, images: &Tensor) -> Result<Tensor> {
        // (b, c, s, s) -> (b, s, s, c), centred
        let mut h = (images.to_dtype(DType::F32)?.permute((0, 2, 3, 1))? - 0.5)?;
        for (down, conv) in &self.stages {
            let (_, hh, ww, _) = h.dims4()?;
            // Odd sides get a zero row/column so 2x2 cells tile them.
            h = h
                .pad_with_zeros(1, 0, hh % 2)?
                .pad_with_zeros(2, 0, ww % 2)?;
            h = dense(down, &space_to_depth(&h, 2)?)?.silu()?;
            h = conv.forward(&h)?.silu()?;
        }
        // (b, h, w, c) -> (b, c): global average pool, so any input size works.
        let pooled = h.mean(1)?.mean(1)?;
        l2_normalize(&self.proj.forward(&pooled)?)
    }

    /// Write the tower (weights + config) atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let data = self.varmap.data().lock().unwrap_or_else(|p| p.into_inner());
        let tensors: BTreeMap<String, Tensor> = data
            .iter()
            .map(|(k, v)| Ok((k.clone(), v.as_tensor().to_device(&Device::Cpu)?)))
            .collect::<Result<_>>()?;
        let meta: HashMap<String, String> = [
            ("spae.format".to_string(), SCORER_FORMAT.to_string()),
            (
                "spae.tower".to_string(),
                serde_json::to_string(&self.cfg).map_err(|e| scorer_err(path, e))?,
            ),
        ]
        .into();
        drop(data);
        crate::checkpoint::write_atomic(path, &tensors, meta)
    }

    /// Read a tower written by [`ImageTower::save`].
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(io_err(path))?;
        Self::load_bytes(&bytes, path, device)
    }

    /// [`ImageTower::load`] from memory; `path` names the bytes in errors.
    pub fn load_bytes(bytes: &[u8], path: &Path, device: &Device) -> Result<Self> {
        let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| scorer_err(path, format!("not a safetensors file: {e}")))?;
        let meta = header.metadata().clone().unwrap_or_default();
        if meta.get("spae.format").map(String::as_str) != Some(SCORER_FORMAT) {
            return Err(scorer_err(path, "not a spae-icl scorer checkpoint"));
        }
        let cfg: TowerConfig =
            serde_json::from_str(meta.get("spae.tower").map_or("", String::as_str))
                .map_err(|e| scorer_err(path, format!("spae.tower: {e}")))?;
        let tower = Self::new(cfg, device)?;
        let tensors = candle_core::safetensors::load_buffer(bytes, device)
            .map_err(|e| scorer_err(path, e))?;
        let data = tower
            .varmap
            .data()
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for (name, var) in data.iter() {
            let t = tensors
                .get(name)
                .ok_or_else(|| scorer_err(path, format!("missing tensor {name}")))?;
            if t.dims() != var.dims() {
                return Err(scorer_err(
                    path,
                    format!(
                        "tensor {name} has shape {:?}, expected {:?}",
                        t.dims(),
                        var.dims()
                    ),
                ));
            }
            var.set(&t.to_dtype(DType::F32)?)?;
        }
        drop(data);
        Ok(tower)
    }
}

fn scorer_err(path: &Path, reason: impl std::fmt::Display) -> SpaeError {
    SpaeError::Scorer {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// The trained tower and the frozen sentence encoder it was aligned to.
pub struct TowerScorer {
    pub tower: ImageTower,
    pub text: SentenceEncoder,
}

impl ImageTextModel for TowerScorer {
    fn embed_images(&self, images: &Tensor) -> Result<Tensor> {
        self.tower.forward(images)
    }
    fn embed_texts(&self, texts: &[&str]) -> Result<Tensor> {
        self.text.embed(texts)
    }
    fn text_model_id(&self) -> String {
        self.tower.cfg.text_model.clone()
    }
    fn zero_shot(&self) -> super::ZeroShotQuery {
        super::ZeroShotQuery {
            captions: self.tower.cfg.captions,
            logit_scale: self.tower.cfg.logit_scale,
        }
    }
}

/// Contrastive training of an [`ImageTower`] against fixed caption embeddings.
pub struct TowerTrainer {
    opt: AdamW,
    scale: f64,
}

/// One step's numbers.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TowerStep {
    pub loss: f32,
    /// Share of the batch whose own class's caption scored highest.
    pub accuracy: f32,
}

impl TowerTrainer {
    pub fn new(tower: &ImageTower, lr: f64) -> Result<Self> {
        let vars = tower.varmap.all_vars();
        let opt = AdamW::new(
            vars,
            ParamsAdamW {
                lr,
                weight_decay: 1e-4,
                ..Default::default()
            },
        )?;
        Ok(Self {
            opt,
            scale: tower.cfg.logit_scale,
        })
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.opt.set_learning_rate(lr);
    }

    /// One step: `images` (B, C, S, S), `captions` (B, K, D): for each image, the caption of
    /// every candidate class in the template drawn for it; `labels` (B,) u32: which of the K
    /// is the image's own class.
    pub fn step(
        &mut self,
        tower: &ImageTower,
        images: &Tensor,
        captions: &Tensor,
        labels: &Tensor,
    ) -> Result<TowerStep> {
        let img = tower.forward(images)?.unsqueeze(2)?; // (b, d, 1)
        let logits = (captions.matmul(&img)?.squeeze(2)? * self.scale)?; // (b, k)
        let loss = candle_nn::loss::cross_entropy(&logits, labels)?;
        self.opt.backward_step(&loss)?;
        let pred = logits.argmax(1)?;
        let acc = pred
            .eq(labels)?
            .to_dtype(DType::F32)?
            .mean_all()?
            .to_scalar::<f32>()?;
        Ok(TowerStep {
            loss: loss.to_scalar()?,
            accuracy: acc,
        })
    }
}
