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
        let json = serde_json::to_string(&self.cfg).map_err(|e| scorer_err(path, e))?;
        save_scorer(&self.varmap, path, "spae.tower", json)
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
        fill_vars(&tower.varmap, bytes, path, device)?;
        Ok(tower)
    }
}

/// Write a scorer's vars and its config (JSON under metadata key `key`) atomically.
pub(crate) fn save_scorer(varmap: &VarMap, path: &Path, key: &str, json: String) -> Result<()> {
    let data = varmap.data().lock().unwrap_or_else(|p| p.into_inner());
    let tensors: BTreeMap<String, Tensor> = data
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.as_tensor().to_device(&Device::Cpu)?)))
        .collect::<Result<_>>()?;
    drop(data);
    let meta: HashMap<String, String> = [
        ("spae.format".to_string(), SCORER_FORMAT.to_string()),
        (key.to_string(), json),
    ]
    .into();
    crate::checkpoint::write_atomic(path, &tensors, meta)
}

/// Set every var of `varmap` from the safetensors `bytes`, which must hold each by name and
/// shape; `path` names the bytes in errors.
pub(crate) fn fill_vars(varmap: &VarMap, bytes: &[u8], path: &Path, device: &Device) -> Result<()> {
    let tensors =
        candle_core::safetensors::load_buffer(bytes, device).map_err(|e| scorer_err(path, e))?;
    let data = varmap.data().lock().unwrap_or_else(|p| p.into_inner());
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
    Ok(())
}

pub(crate) fn scorer_err(path: &Path, reason: impl std::fmt::Display) -> SpaeError {
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
        Self::for_vars(tower.varmap.all_vars(), lr, tower.cfg.logit_scale)
    }

    /// A trainer of `vars` whose image embeddings are compared with captions at `scale`
    /// (a head over frozen features, [`super::devise`]).
    pub fn for_vars(vars: Vec<candle_core::Var>, lr: f64, scale: f64) -> Result<Self> {
        let opt = AdamW::new(
            vars,
            ParamsAdamW {
                lr,
                weight_decay: 1e-4,
                ..Default::default()
            },
        )?;
        Ok(Self { opt, scale })
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
        self.step_embedded(&tower.forward(images)?, captions, labels)
    }

    /// [`TowerTrainer::step`] on unit image embeddings (B, D) already computed by the
    /// trained vars.
    pub fn step_embedded(
        &mut self,
        embeddings: &Tensor,
        captions: &Tensor,
        labels: &Tensor,
    ) -> Result<TowerStep> {
        let img = embeddings.unsqueeze(2)?; // (b, d, 1)
        let logits = (captions.matmul(&img)?.squeeze(2)? * self.scale)?; // (b, k)
        self.step_logits(&logits, labels)
    }

    /// [`TowerTrainer::step_embedded`] with the captions given as the whole table (T, K, D)
    /// and each image's template index `templates` (B): one matmul against all T * K
    /// captions, then each row's template picked, instead of copying a (B, K, D) block.
    pub fn step_templated(
        &mut self,
        embeddings: &Tensor,
        table: &Tensor,
        templates: &[u32],
        labels: &Tensor,
    ) -> Result<TowerStep> {
        let (t, k, d) = table.dims3()?;
        let b = templates.len();
        let all = embeddings
            .matmul(&table.reshape((t * k, d))?.t()?)?
            .reshape((b, t, k))?;
        let pick: Vec<u32> = templates
            .iter()
            .flat_map(|&i| std::iter::repeat_n(i, k))
            .collect();
        let pick = Tensor::from_vec(pick, (b, 1, k), embeddings.device())?;
        let logits = (all.gather(&pick, 1)?.squeeze(1)? * self.scale)?; // (b, k)
        self.step_logits(&logits, labels)
    }

    fn step_logits(&mut self, logits: &Tensor, labels: &Tensor) -> Result<TowerStep> {
        let loss = candle_nn::loss::cross_entropy(logits, labels)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Picking each row's template out of one matmul against the whole table gives the loss of
    /// the copied (B, K, D) block.
    #[test]
    fn templated_step_equals_the_copied_captions() {
        let dev = Device::Cpu;
        let (t, k, d, b) = (5, 7, 16, 6);
        let unit = |x: Tensor| super::super::text::l2_normalize(&x).unwrap();
        let table = unit(Tensor::randn(0f32, 1.0, (t * k, d), &dev).unwrap())
            .reshape((t, k, d))
            .unwrap();
        let emb = unit(Tensor::randn(0f32, 1.0, (b, d), &dev).unwrap());
        let templates: Vec<u32> = vec![0, 4, 2, 2, 1, 3];
        let labels = Tensor::new(&[1u32, 0, 6, 3, 3, 5], &dev).unwrap();
        let copied = table
            .index_select(&Tensor::new(templates.as_slice(), &dev).unwrap(), 0)
            .unwrap();
        let scale = 20.0;
        // The losses are read before the optimiser's update, so a trainer with no vars works.
        let mut a = TowerTrainer::for_vars(vec![], 1e-3, scale).unwrap();
        let mut c = TowerTrainer::for_vars(vec![], 1e-3, scale).unwrap();
        let x = a.step_embedded(&emb, &copied, &labels).unwrap();
        let y = c.step_templated(&emb, &table, &templates, &labels).unwrap();
        // Each logit is scale times a dot product of two unit vectors of d terms: two summation
        // orders differ by at most 2 d eps times the sum of |terms| (<= 1). Cross-entropy moves
        // by at most twice the largest logit change, its log-sum-exp adds a few eps of the loss.
        let tol =
            2.0 * (2.0 * d as f32 * f32::EPSILON * scale as f32) + 8.0 * f32::EPSILON * x.loss;
        assert!((x.loss - y.loss).abs() <= tol, "{} vs {}", x.loss, y.loss);
        assert_eq!(x.accuracy, y.accuracy);
        // A wrong pick (every row template 0) gives another loss.
        let mut w = TowerTrainer::for_vars(vec![], 1e-3, scale).unwrap();
        let z = w.step_templated(&emb, &table, &[0; 6], &labels).unwrap();
        assert!(
            (x.loss - z.loss).abs() > 100.0 * tol,
            "{} vs {}",
            x.loss,
            z.loss
        );
    }
}
