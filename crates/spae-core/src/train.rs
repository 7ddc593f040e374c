//! Training the encoder and decoder around the frozen codebook (the SPAE paper's training
//! objective).
//!
//! Each step samples a pyramid depth per batch so that every prefix of the pyramid decodes
//! (progressive depth); gradients reach the encoder through the straight-through estimator;
//! a commitment term keeps z near its codes. The semantic loss (SPAE paper, Sec. 3.1) pulls the
//! top layers' targets towards the entries a scorer finds most relevant to each image.

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
    /// Share of steps that decode the full pyramid **(ours)**; the others draw their depth
    /// uniformly (progressive depth). The full depth is what reconstructs best and what a
    /// uniform draw trains least often: 1 step in D.
    #[serde(default)]
    pub full_depth_share: f64,
    /// Train the decoder alone **(ours)**: the encoder (and so every image's words) stays as
    /// it is, and only reconstruction drives the step (commitment and the semantic loss act
    /// on the encoder). A second phase after a full run sharpens the pictures the words
    /// decode to without changing a word.
    #[serde(default)]
    pub freeze_encoder: bool,
    pub weight_decay: f64,
    /// Commitment weight beta in beta * ||z - sg(zhat)||^2 (the VQ-VAE value, 0.25).
    pub commitment: f64,
    pub seed: u64,
    /// The semantic loss; `None`: reconstruction and commitment only.
    #[serde(default)]
    pub semantic: Option<SemanticConfig>,
    /// The codebook-usage term; `None`: off.
    #[serde(default)]
    pub usage: Option<UsageConfig>,
}

/// A codebook-usage (entropy) term on the first layer **(ours, for baselines without the
/// semantic loss)**: with a frozen codebook and reconstruction alone, an encoder may collapse
/// onto a handful of entries whose positions the decoder learns to read. Over the soft
/// assignments p = softmax_k(-||z - e_k||^2 / tau) of the first layer's positions, the term is
/// the mean per-position entropy H(p) minus the entropy of the batch's mean assignment: each
/// position commits to one entry while the batch spreads over many (the entropy penalty of
/// MAGVIT-v2, Yu et al. 2024, Sec. 3.1, as in vector-quantize-pytorch's `entropy_loss_weight`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageConfig {
    pub weight: f64,
    pub tau: f64,
}

/// The semantic loss (SPAE paper, Sec. 3.1: semantic guidance): on each of the first
/// `layers` layers, cross-entropy between softmax_k(-||t_l(p) - e_k||^2 / tau) at every
/// position and the image's target distribution over its most relevant entries, scaled by the
/// scorer's confidence in the image, with its weight ramped in linearly **(ours)**.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SemanticConfig {
    pub layers: usize,
    pub weight: f64,
    /// Steps over which the weight rises linearly from 0, counted from the first step that
    /// has semantic targets (so a run resumed with a scorer ramps it in too).
    pub ramp_steps: usize,
    pub tau: f64,
}

impl Default for SemanticConfig {
    fn default() -> Self {
        Self {
            layers: 2,
            weight: 0.05,
            ramp_steps: 300,
            tau: 0.1,
        }
    }
}

/// Per-image targets of the semantic loss.
#[derive(Debug, Clone)]
pub struct SemanticTargets {
    /// (B, K) u32: codebook entries, most relevant first.
    pub indices: Tensor,
    /// (B, K) f32: target probability of each (rows sum to 1).
    pub weights: Tensor,
    /// (B,) f32 in [0, 1]: how much the scorer is trusted on each image.
    pub confidence: Tensor,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: 2000,
            batch_size: 64,
            lr: 1e-3,
            warmup: 100,
            full_depth_share: 0.0,
            freeze_encoder: false,
            weight_decay: 1e-4,
            commitment: 0.25,
            seed: 0,
            semantic: None,
            usage: None,
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
    /// Confidence-weighted cross-entropy of the semantic layers, before its weight (0 without).
    pub semantic: f32,
    /// The semantic weight at this step (ramped).
    pub semantic_weight: f64,
    /// The usage term (per-position entropy minus the batch's), before its weight (0 without).
    #[serde(default)]
    pub usage: f32,
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
    /// Steps taken with the semantic loss on (its ramp).
    semantic_steps: usize,
    rng: u64,
}

impl Trainer {
    pub fn new(model: &SpaeModel, cfg: TrainConfig) -> Result<Self> {
        let vars = model
            .named_vars()
            .into_iter()
            .filter(|(name, _)| !(cfg.freeze_encoder && name.starts_with("encoder.")))
            .map(|(_, v)| v)
            .collect();
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
            semantic_steps: 0,
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

    /// Depth for this step (see [`depth_from_draw`]): one draw per step, so
    /// [`Trainer::skip_to`] replays the stream.
    fn sample_depth(&mut self, max: usize) -> usize {
        let u = self.next_u64();
        depth_from_draw(u, self.cfg.full_depth_share, max)
    }

    /// One optimisation step on `images` (B, C, S, S) in [0, 1], without semantic targets.
    pub fn step(&mut self, model: &SpaeModel, images: &Tensor) -> Result<LossBreakdown> {
        self.step_with(model, images, None)
    }

    /// One optimisation step; `targets` (for the same B images) switch the semantic loss on
    /// when the config has one.
    pub fn step_with(
        &mut self,
        model: &SpaeModel,
        images: &Tensor,
        targets: Option<&SemanticTargets>,
    ) -> Result<LossBreakdown> {
        let images = images.to_device(model.device())?;
        let frozen = model.frozen_inputs(&images)?;
        self.step_with_frozen(model, &images, &frozen, targets)
    }

    /// [`Trainer::step_with`] with what the model's frozen networks read of `images` given
    /// ([`SpaeModel::frozen_inputs`]). They are frozen, so a run computes each image's once
    /// and keeps them.
    pub fn step_with_frozen(
        &mut self,
        model: &SpaeModel,
        images: &Tensor,
        frozen: &crate::FrozenInputs,
        targets: Option<&SemanticTargets>,
    ) -> Result<LossBreakdown> {
        let max_depth = model.config().pyramid.depth();
        let depth = self.sample_depth(max_depth);
        let lr = self.cfg.lr_at(self.step);
        self.opt.set_learning_rate(lr);
        let images = images.to_device(model.device())?;
        let z = model.encode_with(&images, frozen)?;
        // A frozen encoder: no gradient reaches it, and the losses that only move it are off.
        let z = if self.cfg.freeze_encoder {
            z.detach()
        } else {
            z
        };
        let sem = match (&self.cfg.semantic, targets) {
            (Some(c), Some(t)) if c.layers > 0 && !self.cfg.freeze_encoder => Some((c.clone(), t)),
            _ => None,
        };
        let q_depth = sem
            .as_ref()
            .map_or(depth, |(c, _)| depth.max(c.layers.min(max_depth)));
        let q = model
            .quantizer()
            .quantize(&z.detach(), model.codebook(), q_depth)?;
        let zhat = &q.recon[depth - 1];
        let decoded = model.decode(&model.decoder_input(&q, depth, Some(&z))?)?;
        let recon = (decoded - &images)?.sqr()?.mean_all()?;
        let commit = (&z - zhat)?.sqr()?.sum(D::Minus1)?.mean_all()?;
        let mut total = if self.cfg.freeze_encoder {
            recon.clone()
        } else {
            (&recon + (&commit * self.cfg.commitment)?)?
        };
        let (mut semantic, mut sem_w) = (0f32, 0f64);
        if let Some((c, t)) = sem {
            self.semantic_steps += 1;
            sem_w = c.weight * (self.semantic_steps as f64 / c.ramp_steps.max(1) as f64).min(1.0);
            let loss = semantic_loss(model, &z, &q, t, &c)?;
            semantic = loss.to_scalar()?;
            total = (total + (loss * sem_w)?)?;
        }
        let mut usage = 0f32;
        if let Some(u) = self.cfg.usage.as_ref().filter(|_| !self.cfg.freeze_encoder) {
            let loss = usage_loss(model, &z, u.tau)?;
            usage = loss.to_scalar()?;
            total = (total + (loss * u.weight)?)?;
        }
        self.opt.backward_step(&total)?;
        let out = LossBreakdown {
            step: self.step,
            depth,
            lr,
            recon: recon.to_scalar()?,
            commit: commit.to_scalar()?,
            semantic,
            semantic_weight: sem_w,
            usage,
            total: total.to_scalar()?,
        };
        self.step += 1;
        Ok(out)
    }
}

/// The full depth `max` with probability `full_depth_share`, else uniform over 1..=max
/// (progressive depth), from one 64-bit draw `u`. Without a share the depth is u mod max, the
/// stream of every run before the share existed (so their recipes retrain identically); with
/// one, the top 53 bits are the coin and the low 32 bits give the uniform depth.
fn depth_from_draw(u: u64, full_depth_share: f64, max: usize) -> usize {
    let max = max.max(1) as u64;
    if full_depth_share <= 0.0 {
        return 1 + (u % max) as usize;
    }
    let coin = (u >> 11) as f64 / (1u64 << 53) as f64;
    if coin < full_depth_share {
        return max as usize;
    }
    1 + ((u & 0xFFFF_FFFF) % max) as usize
}

/// [`UsageConfig`]'s term at the first layer's positions of `z` (B, S, S, D): mean entropy of
/// each position's soft assignment minus the entropy of their mean, in nats.
pub fn usage_loss(model: &SpaeModel, z: &Tensor, tau: f64) -> Result<Tensor> {
    let d = z.dims4()?.3;
    let pos = model.quantizer().positions(0, z)?;
    let flat = crate::quantizer::subsample(z, &pos)?.reshape(((), d))?;
    let dist = crate::quantizer::sq_distances(&flat, model.codebook())?; // (N, V)
    let logits = (dist * (-1.0 / tau))?;
    let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let p = logp.exp()?;
    let per_position = (&p * &logp)?.sum(D::Minus1)?.mean_all()?.neg()?;
    let mean = p.mean(0)?;
    // The 1e-12 keeps log finite where no position puts mass.
    let batch = (&mean * (&mean + 1e-12)?.log()?)?.sum_all()?.neg()?;
    Ok((per_position - batch)?)
}

/// Mean over images of confidence x cross-entropy, averaged over the positions of the first
/// `c.layers` layers. Layer l's target at its positions is SAQ's t_l = l*z - S_{l-1} (RQ:
/// z - S_{l-1}), with S_{l-1} from the codes (no gradient) and z with it.
fn semantic_loss(
    model: &SpaeModel,
    z: &Tensor,
    q: &crate::Quantized,
    t: &SemanticTargets,
    c: &SemanticConfig,
) -> Result<Tensor> {
    let cb = model.codebook();
    let pyr = &model.config().pyramid;
    let (b, _, _, d) = z.dims4()?;
    let k = t.indices.dims()[1];
    let mut per_image: Option<Tensor> = None;
    let layers = c.layers.min(pyr.depth());
    for layer in 0..layers {
        let l = (layer + 1) as f64;
        let s = pyr.side(layer);
        let pos = model.quantizer().positions(layer, z)?;
        let z_p = crate::quantizer::subsample(z, &pos)?;
        let target = if layer == 0 {
            z_p
        } else {
            // S_{l-1} = (l-1) * zhat_{l-1} under SAQ, zhat_{l-1} under RQ.
            let prev = crate::quantizer::subsample(&q.recon[layer - 1], &pos)?;
            match model.config().quantizer {
                crate::QuantizerKind::Saq => ((z_p * l)? - (prev * (l - 1.0))?)?,
                crate::QuantizerKind::Rq => (z_p - prev)?,
            }
        };
        let flat = target.reshape((b * s * s, d))?;
        let dist = crate::quantizer::sq_distances(&flat, cb)?; // (b*s*s, V)
        let logp = candle_nn::ops::log_softmax(&(dist * (-1.0 / c.tau))?, D::Minus1)?;
        // The image's targets, repeated for each of its s*s positions.
        let idx = t
            .indices
            .unsqueeze(1)?
            .broadcast_as((b, s * s, k))?
            .reshape((b * s * s, k))?
            .contiguous()?;
        let w = t
            .weights
            .unsqueeze(1)?
            .broadcast_as((b, s * s, k))?
            .reshape((b * s * s, k))?;
        let ce = (logp.gather(&idx, 1)? * w)?.sum(1)?.neg()?; // (b*s*s,)
        let ce = ce.reshape((b, s * s))?.mean(1)?;
        per_image = Some(match per_image {
            Some(acc) => (acc + ce)?,
            None => ce,
        });
    }
    let per_image = match per_image {
        Some(p) => (p / layers as f64)?,
        None => return Ok(Tensor::zeros((), candle_core::DType::F32, z.device())?),
    };
    Ok((per_image * &t.confidence)?.mean_all()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_depth_share_biases_the_sampled_depth() {
        let count_full = |share: f64| {
            // The trainer's generator (xorshift64*), seeded.
            let mut rng = 0x5DEE_CE66_D1CE_5EEDu64;
            let depths: Vec<usize> = (0..4000)
                .map(|_| {
                    rng ^= rng >> 12;
                    rng ^= rng << 25;
                    rng ^= rng >> 27;
                    depth_from_draw(rng.wrapping_mul(0x2545_F491_4F6C_DD1D), share, 5)
                })
                .collect();
            assert!(depths.iter().all(|d| (1..=5).contains(d)));
            assert!(
                (1..5).all(|d| depths.contains(&d)),
                "every depth still drawn"
            );
            depths.iter().filter(|&&d| d == 5).count() as f64 / 4000.0
        };
        // A share of N = 4000 draws with probability p lies within 4 binomial standard
        // deviations, sqrt(p (1 - p) / N), of p (two-sided 6e-5 for a fresh seed; this one is
        // fixed): 0.025 for p = 0.2, 0.031 for p = 0.6. A share lost or doubled is 13+ sigma off.
        let within_4_sigma = |share: f64, p: f64| {
            let sigma = (p * (1.0 - p) / 4000.0).sqrt();
            assert!(
                (share - p).abs() < 4.0 * sigma,
                "{share} vs {p} +- 4 x {sigma}"
            );
        };
        within_4_sigma(count_full(0.0), 0.2);
        // Without a share, the draw of the runs before it: u mod D + 1.
        for u in [0u64, 7, u64::MAX, 0x1234_5678_9ABC_DEF0] {
            assert_eq!(depth_from_draw(u, 0.0, 5), 1 + (u % 5) as usize);
        }
        // 0.5 + 0.5 * 1/5 of the steps.
        within_4_sigma(count_full(0.5), 0.6);
    }

    #[test]
    fn schedule_warms_up_then_decays_to_a_tenth() {
        let cfg = TrainConfig {
            steps: 1000,
            warmup: 100,
            lr: 1.0,
            ..Default::default()
        };
        // Warm-up is one correctly rounded division, 1 / 100 and 100 / 100: exactly the
        // literals.
        assert_eq!(cfg.lr_at(0), 0.01);
        assert_eq!(cfg.lr_at(99), 1.0);
        assert!(cfg.lr_at(500) < cfg.lr_at(200));
        // 0.1 + 0.45 (1 + cos(pi)): cos of f64 pi is -1 to within an ulp of the platform's
        // libm (2^-53 near -1), which adds at most 0.45 * 2^-53 ~ 5e-17; EPSILON (2.2e-16)
        // bounds that and the final rounding.
        assert!((cfg.lr_at(1000) - 0.1).abs() < f64::EPSILON);
    }
}
