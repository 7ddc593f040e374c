//! An independent judge of generated digits: a classifier trained on MNIST pixels, never on
//! SPAE words, so it can say whether an image an LLM drew shows the digit it was asked for.
//! `spae-icl train-judge` trains it; `eval-generate` uses it.

use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{linear, Linear, Optimizer, VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use spae_datasets::{LabeledImages, Split};

use crate::cli::TrainJudgeArgs;

/// A multi-layer perceptron over 28x28 gray pixels.
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
    layers: Vec<Linear>,
}

impl DigitJudge {
    pub fn new(cfg: &JudgeConfig, vb: VarBuilder) -> Result<Self> {
        let mut dims = vec![cfg.image_size * cfg.image_size];
        dims.extend(&cfg.hidden);
        dims.push(cfg.classes);
        let layers = dims
            .windows(2)
            .enumerate()
            .map(|(i, d)| linear(d[0], d[1], vb.pp(format!("fc{i}"))))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self { layers })
    }

    /// Logits (B, classes) of images (B, 1, S, S) in [0, 1].
    pub fn forward(&self, images: &Tensor) -> Result<Tensor> {
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

    /// Loads a judge written by `train-judge`.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Self::load_bytes(&bytes, &path.display().to_string())
    }

    pub fn load_bytes(bytes: &[u8], name: &str) -> Result<Self> {
        let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
            .with_context(|| format!("{name}: not a safetensors file"))?;
        let cfg: JudgeConfig = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("spae.judge"))
            .with_context(|| format!("{name}: no spae.judge config: not a judge checkpoint"))
            .and_then(|s| {
                serde_json::from_str(s).with_context(|| format!("{name}: bad judge config"))
            })?;
        let vb = VarBuilder::from_buffered_safetensors(bytes.to_vec(), DType::F32, &Device::Cpu)
            .with_context(|| format!("{name}: reading tensors"))?;
        Self::new(&cfg, vb).with_context(|| format!("{name}: tensors do not match its config"))
    }

    /// The judge shipped in `checkpoints/` (made by `spae-icl train-judge`).
    pub fn builtin() -> Result<Self> {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../checkpoints/judge-mnist.safetensors");
        Self::load(&path)
            .context("the shipped judge (make one with `spae-icl train-judge`, or pass --judge)")
    }
}

/// Accuracy of `judge` on `data`.
pub fn accuracy(judge: &DigitJudge, data: &LabeledImages) -> Result<f64> {
    let mut correct = 0usize;
    let all: Vec<usize> = (0..data.len()).collect();
    for chunk in all.chunks(1000) {
        let pred = judge.predict(&data.batch(chunk, &Device::Cpu)?)?;
        correct += pred
            .iter()
            .zip(chunk)
            .filter(|(p, &i)| **p == data.labels[i])
            .count();
    }
    Ok(correct as f64 / data.len().max(1) as f64)
}

pub fn train_judge(args: TrainJudgeArgs) -> Result<()> {
    let cache = spae_assets::AssetCache::from_env();
    let train = spae_datasets::mnist(&cache, Split::Train)?;
    let test = spae_datasets::mnist(&cache, Split::Test)?;
    if train.size != 28 || train.channels != 1 {
        bail!(
            "the judge reads 28x28 gray digits; MNIST gave {}x{}",
            train.size,
            train.channels
        );
    }
    let cfg = JudgeConfig::default();
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let judge = DigitJudge::new(&cfg, vb)?;
    let steps_per_epoch = train.len() / args.batch_size;
    let total = steps_per_epoch * args.epochs;
    let mut opt = candle_nn::AdamW::new(
        varmap.all_vars(),
        candle_nn::ParamsAdamW {
            lr: args.lr,
            weight_decay: 1e-4,
            ..Default::default()
        },
    )?;
    let mut rng = StdRng::seed_from_u64(args.seed);
    let bar = crate::progress::bar(total as u64, "judge steps");
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut step = 0usize;
    for epoch in 0..args.epochs {
        order.shuffle(&mut rng);
        for batch in order.chunks_exact(args.batch_size) {
            // Cosine decay from lr to 0 over the run.
            let progress = step as f64 / total as f64;
            opt.set_learning_rate(args.lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()));
            let x = train.batch(batch, &Device::Cpu)?;
            let y: Vec<u32> = batch.iter().map(|&i| train.labels[i]).collect();
            let y = Tensor::new(y, &Device::Cpu)?;
            let loss = candle_nn::loss::cross_entropy(&judge.forward(&x)?, &y)?;
            opt.backward_step(&loss)?;
            step += 1;
            bar.inc(1);
            if step.is_multiple_of(50) {
                bar.set_message(format!(
                    "epoch {} loss {:.3}",
                    epoch + 1,
                    loss.to_scalar::<f32>()?
                ));
            }
        }
    }
    bar.finish_and_clear();
    let acc = accuracy(&judge, &test)?;
    let mut meta = std::collections::HashMap::new();
    meta.insert("spae.judge".to_string(), serde_json::to_string(&cfg)?);
    let tensors: Vec<(String, Tensor)> = varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("judge weights lock poisoned"))?
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    let tmp = args.out.with_extension("partial");
    safetensors::serialize_to_file(
        tensors.iter().map(|(k, v)| (k.as_str(), v)),
        Some(meta),
        &tmp,
    )
    .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &args.out).with_context(|| format!("writing {}", args.out.display()))?;
    let metrics = serde_json::json!({
        "mnist_test_accuracy": acc, "epochs": args.epochs, "batch_size": args.batch_size,
        "lr": args.lr, "seed": args.seed, "config": cfg,
    });
    crate::run::results::write_atomic(
        &args.out.with_extension("json"),
        &serde_json::to_string_pretty(&metrics)?,
    )?;
    println!(
        "MNIST test accuracy {:.2}% -> {}",
        100.0 * acc,
        args.out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped judge keeps the accuracy its metrics file claims (over 98%, issue #7).
    #[test]
    fn shipped_judge_reads_mnist_test_digits() {
        let judge = DigitJudge::builtin().unwrap();
        let test = spae_datasets::mnist(&spae_assets::AssetCache::from_env(), Split::Test).unwrap();
        let acc = accuracy(&judge, &test).unwrap();
        assert!(acc > 0.98, "judge accuracy {acc}");
        let claimed: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../../checkpoints/judge-mnist.json"),
            )
            .unwrap(),
        )
        .unwrap();
        let claimed = claimed["mnist_test_accuracy"].as_f64().unwrap();
        assert!((acc - claimed).abs() < 0.002, "{acc} vs {claimed}");
    }

    #[test]
    fn a_file_that_is_not_a_judge_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.safetensors");
        std::fs::write(&p, b"garbage").unwrap();
        let err = format!("{:#}", DigitJudge::load(&p).err().unwrap());
        assert!(err.contains("x.safetensors"), "{err}");
    }
}
