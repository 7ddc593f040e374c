//! An independent judge of generated digits: a classifier trained on MNIST pixels, never on
//! SPAE words, so it can say whether an image an LLM drew shows the digit it was asked for
//! (the conditional generation of the paper, Sec. 4.3, scored without a person looking).
//!
//! This crate holds the model and its training; the data comes from the caller as bytes and
//! labels ([`LabeledPixels`]), so the judge does not depend on any data set loader.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{linear, Linear, Optimizer, VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::{io_err, LabeledPixels, Result, SpaeError};

/// The safetensors metadata key that holds a judge's [`JudgeConfig`] (JSON).
pub const JUDGE_META: &str = "spae.judge";

/// The judge shipped in `checkpoints/` (made by `spae-icl train-judge --epochs 4`), built into
/// the library so an installed binary needs no repository beside it.
const BUILTIN: &[u8] = include_bytes!("../../../checkpoints/judge-mnist.safetensors");

/// How the built-in judge is named in messages.
pub const BUILTIN_NAME: &str = "<built-in judge-mnist>";

/// A multi-layer perceptron over `image_size` x `image_size` gray pixels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeConfig {
    pub image_size: usize,
    pub hidden: Vec<usize>,
    pub classes: usize,
}

impl Default for JudgeConfig {
    fn default() -> Self {
        Self {
            image_size: 28,
            hidden: vec![512, 256],
            classes: 10,
        }
    }
}

pub struct DigitJudge {
    cfg: JudgeConfig,
    layers: Vec<Linear>,
}

impl std::fmt::Debug for DigitJudge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigitJudge")
            .field("cfg", &self.cfg)
            .finish()
    }
}

impl DigitJudge {
    /// The layers `fc0`, `fc1`, .. of `cfg`, their weights from `vb`.
    pub fn new(cfg: &JudgeConfig, vb: VarBuilder) -> Result<Self> {
        let mut dims = vec![cfg.image_size * cfg.image_size];
        dims.extend(&cfg.hidden);
        dims.push(cfg.classes);
        let layers = dims
            .windows(2)
            .enumerate()
            .map(|(i, d)| linear(d[0], d[1], vb.pp(format!("fc{i}"))))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            cfg: cfg.clone(),
            layers,
        })
    }

    pub fn config(&self) -> &JudgeConfig {
        &self.cfg
    }

    /// Logits (B, classes) of images (B, 1, S, S) in [0, 1].
    pub fn forward(&self, images: &Tensor) -> Result<Tensor> {
        let dims = images.dims();
        let side = self.cfg.image_size;
        if dims.len() != 4 || dims[1..] != [1, side, side] {
            return Err(SpaeError::Judge(format!(
                "reads (B, 1, {side}, {side}) gray images, got a tensor of shape {dims:?}"
            )));
        }
        let mut x = images.flatten_from(1)?;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x)?;
            if i + 1 < self.layers.len() {
                x = x.relu()?;
            }
        }
        Ok(x)
    }

    /// The most likely class of each image.
    pub fn predict(&self, images: &Tensor) -> Result<Vec<u32>> {
        Ok(self.forward(images)?.argmax(D::Minus1)?.to_vec1::<u32>()?)
    }

    /// Loads a judge written by [`DigitJudge::save`] (`spae-icl train-judge`).
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(io_err(path))?;
        Self::load_bytes(&bytes, path)
    }

    /// [`DigitJudge::load`] from bytes in memory; `path` names them in errors.
    pub fn load_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| judge_err(path, format!("not a safetensors file: {e}")))?;
        let text = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get(JUDGE_META))
            .ok_or_else(|| {
                judge_err(
                    path,
                    format!("no {JUDGE_META} config: not a judge checkpoint"),
                )
            })?;
        let cfg: JudgeConfig = serde_json::from_str(text)
            .map_err(|e| judge_err(path, format!("bad judge config: {e}")))?;
        let vb = VarBuilder::from_buffered_safetensors(bytes.to_vec(), DType::F32, &Device::Cpu)
            .map_err(|e| judge_err(path, format!("reading tensors: {e}")))?;
        Self::new(&cfg, vb)
            .map_err(|e| judge_err(path, format!("tensors do not match its config: {e}")))
    }

    /// The judge shipped in `checkpoints/judge-mnist.safetensors`, built into the library.
    pub fn builtin() -> Result<Self> {
        Self::load_bytes(BUILTIN, Path::new(BUILTIN_NAME))
    }

    /// The bytes of the built-in judge (to hash them into a result file, say).
    pub fn builtin_bytes() -> &'static [u8] {
        BUILTIN
    }

    /// Writes the judge (weights + config under [`JUDGE_META`]) atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors = BTreeMap::new();
        for (i, layer) in self.layers.iter().enumerate() {
            tensors.insert(format!("fc{i}.weight"), layer.weight().clone());
            if let Some(b) = layer.bias() {
                tensors.insert(format!("fc{i}.bias"), b.clone());
            }
        }
        let cfg = serde_json::to_string(&self.cfg).map_err(|e| judge_err(path, e))?;
        let meta: HashMap<String, String> = [(JUDGE_META.to_string(), cfg)].into();
        crate::checkpoint::write_atomic(path, &tensors, meta)
    }
}

fn judge_err(path: &Path, reason: impl std::fmt::Display) -> SpaeError {
    SpaeError::JudgeFile {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Share of `data` whose label `judge` predicts.
pub fn accuracy(judge: &DigitJudge, data: &LabeledPixels) -> Result<f64> {
    let mut correct = 0usize;
    let all: Vec<usize> = (0..data.len()).collect();
    for chunk in all.chunks(1000) {
        let pred = judge.predict(&data.batch(chunk)?)?;
        correct += pred
            .iter()
            .zip(chunk)
            .filter(|(p, &i)| **p == data.labels()[i])
            .count();
    }
    Ok(correct as f64 / data.len().max(1) as f64)
}

/// How a judge is trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JudgeTrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    /// Peak learning rate of AdamW, decayed to 0 by a cosine over the run.
    pub lr: f64,
    /// Seed of the order the training images are visited in.
    pub seed: u64,
    pub judge: JudgeConfig,
}

impl Default for JudgeTrainConfig {
    fn default() -> Self {
        Self {
            epochs: 10,
            batch_size: 128,
            lr: 1e-3,
            seed: 0,
            judge: JudgeConfig::default(),
        }
    }
}

/// Where a training run is, reported after every step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JudgeStep {
    /// Steps done, 1-based.
    pub step: usize,
    pub total: usize,
    /// 0-based.
    pub epoch: usize,
    /// The batch's loss, every 50 steps.
    pub loss: Option<f32>,
}

/// A judge trained on `train`: AdamW (weight decay 1e-4), the learning rate decayed from
/// `cfg.lr` to 0 by a cosine, the images visited in an order shuffled by `cfg.seed` each epoch,
/// full batches only. `on_step` hears of every step.
pub fn train_judge(
    cfg: &JudgeTrainConfig,
    train: &LabeledPixels,
    on_step: &mut dyn FnMut(&JudgeStep),
) -> Result<DigitJudge> {
    let side = cfg.judge.image_size;
    if train.channels() != 1 || train.size() != side {
        return Err(SpaeError::Judge(format!(
            "the judge reads {side}x{side} gray images; the training data is {}x{}x{}",
            train.channels(),
            train.size(),
            train.size()
        )));
    }
    if cfg.epochs == 0 {
        return Err(SpaeError::Judge(
            "--epochs 0: train at least one epoch".into(),
        ));
    }
    if cfg.batch_size == 0 || cfg.batch_size > train.len() {
        return Err(SpaeError::Judge(format!(
            "--batch-size {}: between 1 and the {} training images",
            cfg.batch_size,
            train.len()
        )));
    }
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let judge = DigitJudge::new(&cfg.judge, vb)?;
    let steps_per_epoch = train.len() / cfg.batch_size;
    let total = steps_per_epoch * cfg.epochs;
    let mut opt = candle_nn::AdamW::new(
        varmap.all_vars(),
        candle_nn::ParamsAdamW {
            lr: cfg.lr,
            weight_decay: 1e-4,
            ..Default::default()
        },
    )?;
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut step = 0usize;
    for epoch in 0..cfg.epochs {
        order.shuffle(&mut rng);
        for batch in order.chunks_exact(cfg.batch_size) {
            // Cosine decay from lr to 0 over the run.
            let progress = step as f64 / total as f64;
            opt.set_learning_rate(cfg.lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()));
            let x = train.batch(batch)?;
            let y: Vec<u32> = batch.iter().map(|&i| train.labels()[i]).collect();
            let y = Tensor::new(y, &Device::Cpu)?;
            let loss = candle_nn::loss::cross_entropy(&judge.forward(&x)?, &y)?;
            opt.backward_step(&loss)?;
            step += 1;
            let loss = if step.is_multiple_of(50) {
                Some(loss.to_scalar::<f32>()?)
            } else {
                None
            };
            on_step(&JudgeStep {
                step,
                total,
                epoch,
                loss,
            });
        }
    }
    Ok(judge)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_a_judge_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.safetensors");
        std::fs::write(&p, b"garbage").unwrap();
        let err = DigitJudge::load(&p).unwrap_err().to_string();
        assert!(err.contains("x.safetensors"), "{err}");
        assert!(err.contains("not a safetensors file"), "{err}");
    }

    /// Tiny images: stripes whose row says the class.
    fn stripes(n: usize, side: usize) -> (Vec<u8>, Vec<u32>) {
        let (mut pixels, mut labels) = (Vec::new(), Vec::new());
        for i in 0..n {
            let class = (i % 2) as u32;
            for r in 0..side {
                for _ in 0..side {
                    pixels.push(if (r % 2) as u32 == class { 255 } else { 0 });
                }
            }
            labels.push(class);
        }
        (pixels, labels)
    }

    #[test]
    fn the_builtin_judge_loads_from_the_library_and_refuses_colour() {
        let judge = DigitJudge::builtin().unwrap();
        assert_eq!(judge.config(), &JudgeConfig::default());
        let rgb = Tensor::zeros((2, 3, 28, 28), DType::F32, &Device::Cpu).unwrap();
        let err = judge.predict(&rgb).unwrap_err().to_string();
        assert!(
            err.contains("gray") && err.contains("[2, 3, 28, 28]"),
            "{err}"
        );
        assert_eq!(
            judge.predict(&rgb.narrow(1, 0, 1).unwrap()).unwrap().len(),
            2
        );
    }

    #[test]
    fn a_trained_judge_learns_saves_and_reads_back_the_same() {
        let cfg = JudgeTrainConfig {
            epochs: 20,
            batch_size: 8,
            lr: 1e-2,
            seed: 3,
            judge: JudgeConfig {
                image_size: 4,
                hidden: vec![8],
                classes: 2,
            },
        };
        let (pixels, labels) = stripes(32, 4);
        let data = LabeledPixels::new(&pixels, &labels, 1, 4).unwrap();
        let mut steps = Vec::new();
        let judge = train_judge(&cfg, &data, &mut |s| steps.push(*s)).unwrap();
        assert_eq!(steps.len(), 80);
        assert_eq!(
            steps.last().map(|s| (s.step, s.total, s.epoch)),
            Some((80, 80, 19))
        );
        assert!(steps[49].loss.is_some() && steps[48].loss.is_none());
        assert_eq!(accuracy(&judge, &data).unwrap(), 1.0);

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j.safetensors");
        judge.save(&p).unwrap();
        let back = DigitJudge::load(&p).unwrap();
        assert_eq!(back.config(), &cfg.judge);
        let x = data.batch(&[0, 1, 2]).unwrap();
        let (a, b) = (judge.forward(&x).unwrap(), back.forward(&x).unwrap());
        let diff: f32 = (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert_eq!(diff, 0.0);
    }

    #[test]
    fn bad_training_settings_and_data_are_refused() {
        let (pixels, labels) = stripes(4, 4);
        assert!(LabeledPixels::new(&pixels[1..], &labels, 1, 4).is_err());
        let data = LabeledPixels::new(&pixels, &labels, 1, 4).unwrap();
        assert!(data.batch(&[4]).is_err());
        let small = JudgeConfig {
            image_size: 4,
            hidden: vec![],
            classes: 2,
        };
        let mut cfg = JudgeTrainConfig {
            batch_size: 5,
            judge: small.clone(),
            ..JudgeTrainConfig::default()
        };
        let err = train_judge(&cfg, &data, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("--batch-size 5"), "{err}");
        cfg.batch_size = 2;
        cfg.judge.image_size = 28;
        let err = train_judge(&cfg, &data, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("28x28 gray"), "{err}");
    }
}
