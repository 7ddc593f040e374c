//! Training the encoder and decoder around the frozen codebook (SPAE section 3.3;
//! `../shared/SPAE.md` section 4).
//!
//! Each step samples a pyramid depth per batch so that every prefix of the pyramid decodes
//! (progressive depth); gradients reach the encoder through the straight-through estimator;
//! a commitment term keeps z near its codes. The semantic loss (section 5) needs a scorer and
//! comes with it.

use candle_core::{Tensor, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use serde::{Deserialize, Serialize};

use crate::{Result, SpaeModel};

/// Optimiser and loss settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub steps: usize,
    pub batch_size: usize,
    /// Peak learning rate, reached after `warmup` steps, then cosine decay to 10% of it.
    pub lr: f64,
    pub warmup: usize,
    pub weight_decay: f64,
    /// Commitment weight beta in beta * ||z - sg(zhat)||^2 (the VQ-VAE value, 0.25).
    pub commitment: f64,
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: 2000,
            batch_size: 64,
            lr: 1e-3,
            warmup: 100,
            weight_decay: 1e-4,
            commitment: 0.25,
            seed: 0,
        }
    }
}

impl TrainConfig {
    /// Learning rate at `step` (0-indexed): linear warmup, then cosine to 10% of the peak.
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.lr * (step + 1) as f64 / self.warmup as f64;
        }
        let span = self.steps.saturating_sub(self.warmup).max(1) as f64;
        let t = ((step - self.warmup) as f64 / span).min(1.0);
        let floor = 0.1 * self.lr;
        floor + (self.lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
    }
}

/// The named parts of one step's loss.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossBreakdown {
    pub step: usize,
    pub depth: usize,
    pub lr: f64,
    /// Mean squared pixel error at the sampled depth.
    pub recon: f32,
    /// ||z - sg(zhat)||^2, before its weight.
    pub commit: f32,
    pub total: f32,
}

/// `src` in the forward pass, `tgt`'s value with `src`'s gradient: src + sg(tgt - src).
pub fn straight_through(src: &Tensor, tgt: &Tensor) -> Result<Tensor> {
    Ok((src + (tgt - src)?.detach())?)
}

/// Holds the optimiser state across steps.
pub struct Trainer {
    cfg: TrainConfig,
    opt: AdamW,
    step: usize,
    rng: u64,
}

impl Trainer {
    pub fn new(model: &SpaeModel, cfg: TrainConfig) -> Result<Self> {
        let vars = model.named_vars().into_iter().map(|(_, v)| v).collect();
        let opt = AdamW::new(
            vars,
            ParamsAdamW {
                lr: cfg.lr_at(0),
                weight_decay: cfg.weight_decay,
                ..Default::default()
            },
        )?;
        let rng = cfg.seed ^ 0x5DEE_CE66_D1CE_5EED;
        Ok(Self {
            cfg,
            opt,
            step: 0,
            rng,
        })
    }

    pub fn step_index(&self) -> usize {
        self.step
    }

    /// Continue a resumed run at `step`: the schedule and the random stream pick up there.
    pub fn skip_to(&mut self, step: usize) {
        for _ in 0..step {
            self.next_u64();
            self.sample_batch(1, self.cfg.batch_size);
        }
        self.step = step;
    }

    /// xorshift64*: cheap, seeded, independent of any global RNG.
    fn next_u64(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// `batch` indices below `n`, drawn with replacement from this run's seeded stream.
    pub fn sample_batch(&mut self, n: usize, batch: usize) -> Vec<usize> {
        (0..batch)
            .map(|_| (self.next_u64() % n.max(1) as u64) as usize)
            .collect()
    }

    /// Depth for this step, uniform over the pyramid's layers (progressive depth).
    fn sample_depth(&mut self, max: usize) -> usize {
        1 + (self.next_u64() % max as u64) as usize
    }

    /// One optimisation step on `images` (B, C, S, S) in [0, 1].
    pub fn step(&mut self, model: &SpaeModel, images: &Tensor) -> Result<LossBreakdown> {
        let depth = self.sample_depth(model.config().pyramid.depth());
        let lr = self.cfg.lr_at(self.step);
        self.opt.set_learning_rate(lr);
        let images = images.to_device(model.device())?;
        let z = model.encode(&images)?;
        let q = model
            .quantizer()
            .quantize(&z.detach(), model.codebook(), depth)?;
        let zhat = &q.recon[depth - 1];
        let decoded = model.decode(&straight_through(&z, zhat)?)?;
        let recon = (decoded - &images)?.sqr()?.mean_all()?;
        let commit = (&z - zhat)?.sqr()?.sum(D::Minus1)?.mean_all()?;
        let total = (&recon + (&commit * self.cfg.commitment)?)?;
        self.opt.backward_step(&total)?;
        let out = LossBreakdown {
            step: self.step,
            depth,
            lr,
            recon: recon.to_scalar()?,
            commit: commit.to_scalar()?,
            total: total.to_scalar()?,
        };
        self.step += 1;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_a_tenth() {
        let cfg = TrainConfig {
            steps: 1000,
            warmup: 100,
            lr: 1.0,
            ..Default::default()
        };
        assert!((cfg.lr_at(0) - 0.01).abs() < 1e-12);
        assert!((cfg.lr_at(99) - 1.0).abs() < 1e-12);
        assert!(cfg.lr_at(500) < cfg.lr_at(200));
        assert!((cfg.lr_at(1000) - 0.1).abs() < 1e-9);
    }
}
