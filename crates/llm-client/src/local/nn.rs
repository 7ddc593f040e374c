//! Blocks shared by the model files: RMS norm, rotary embedding, masked grouped-query
//! attention. Written once here instead of once per model.

use candle_core::{DType, Device, Module, Tensor, D};

use crate::error::Result;

#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    /// `weight` is used as stored: for Gemma the GGUF converter has already folded
    /// Gemma's `(1 + w)` into the file (llama.cpp `convert_hf_to_gguf.py`, `norm_shift`).
    pub fn new(weight: Tensor, eps: f32) -> Self {
        Self { weight, eps }
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::rms_norm(
            &xs.contiguous()?,
            &self.weight,
            self.eps,
        )?)
    }
}

/// Which half-rotation layout the checkpoint's q/k use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeLayout {
    /// Pairs `(x[i], x[i + d/2])` (GPT-NeoX, Hugging Face `rotate_half`): Gemma.
    Halves,
    /// Pairs `(x[2i], x[2i+1])`: llama.cpp permutes Llama q/k weights into this layout.
    Interleaved,
}

/// cos/sin tables for positions `0..max_len`, sized to the context in use rather than the
/// model's maximum (131,072 positions would cost seconds and gigabytes at load).
#[derive(Debug, Clone)]
pub struct RotaryEmbedding {
    cos: Tensor,
    sin: Tensor,
    layout: RopeLayout,
}

impl RotaryEmbedding {
    pub fn new(base: f32, head_dim: usize, max_len: usize, layout: RopeLayout) -> Result<Self> {
        let half = head_dim / 2;
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| 1.0 / (base as f64).powf(2.0 * i as f64 / head_dim as f64) as f32)
            .collect();
        let mut cos = Vec::with_capacity(max_len * half);
        let mut sin = Vec::with_capacity(max_len * half);
        for p in 0..max_len {
            for f in &inv_freq {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        Ok(Self {
            cos: Tensor::from_vec(cos, (max_len, half), &Device::Cpu)?,
            sin: Tensor::from_vec(sin, (max_len, half), &Device::Cpu)?,
            layout,
        })
    }

    /// Rotate `xs` of shape `(1, heads, t, head_dim)` holding positions `offset..offset + t`.
    pub fn apply(&self, xs: &Tensor, offset: usize) -> Result<Tensor> {
        let t = xs.dim(2)?;
        let cos = self.cos.narrow(0, offset, t)?;
        let sin = self.sin.narrow(0, offset, t)?;
        let xs = xs.contiguous()?;
        Ok(match self.layout {
            RopeLayout::Halves => candle_nn::rotary_emb::rope(&xs, &cos, &sin)?,
            RopeLayout::Interleaved => candle_nn::rotary_emb::rope_i(&xs, &cos, &sin)?,
        })
    }
}

/// Additive mask `(t, offset + t)` for queries at `offset..offset + t`: causal, and with
/// `window`, a query sees only the last `window` positions (itself included).
pub fn attention_mask(t: usize, offset: usize, window: Option<usize>) -> Result<Tensor> {
    let total = offset + t;
    let mut mask = vec![0f32; t * total];
    for i in 0..t {
        let q = offset + i;
        for (k, m) in mask[i * total..(i + 1) * total].iter_mut().enumerate() {
            let too_old = window.is_some_and(|w| q >= k + w);
            if k > q || too_old {
                *m = f32::NEG_INFINITY;
            }
        }
    }
    Ok(Tensor::from_vec(mask, (t, total), &Device::Cpu)?)
}

/// Grouped-query attention. `q`: `(1, heads, t, d)` already scaled; `k`, `v`:
/// `(1, kv_heads, T, d)`; `mask`: `(t, T)`. Returns `(1, t, heads * d)`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let (_, heads, t, d) = q.dims4()?;
    let (_, kv_heads, total, _) = k.dims4()?;
    let rep = heads / kv_heads;
    // Query heads g*rep .. g*rep+rep share kv head g, so fold them into the rows of one
    // matmul per kv head instead of copying k and v `rep` times.
    // (1, heads, t, d) -> (kv_heads, rep * t, d)
    let q = q.contiguous()?.reshape((kv_heads, rep * t, d))?;
    let k = k.contiguous()?.reshape((kv_heads, total, d))?;
    let v = v.contiguous()?.reshape((kv_heads, total, d))?;
    let scores = q.matmul(&k.t()?)?.reshape((kv_heads, rep, t, total))?;
    let scores = scores.broadcast_add(mask)?;
    let probs = candle_nn::ops::softmax_last_dim(&scores)?.reshape((kv_heads, rep * t, total))?;
    let out = probs.matmul(&v)?;
    // (kv_heads, rep * t, d) -> (1, t, heads * d)
    Ok(out
        .reshape((1, heads, t, d))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((1, t, heads * d))?)
}

/// `xs @ w.T` for a quantized or dense weight.
pub fn linear(w: &candle_core::quantized::QMatMul, xs: &Tensor) -> Result<Tensor> {
    Ok(w.forward(xs)?)
}

/// Rows of `logits` `(1, n, vocab)` as log-probabilities, in f32.
pub fn log_softmax_rows(logits: &Tensor) -> Result<Vec<Vec<f32>>> {
    let logits = logits.to_dtype(DType::F32)?.squeeze(0)?;
    let rows = logits.to_vec2::<f32>()?;
    Ok(rows.into_iter().map(|r| log_softmax(&r)).collect())
}

pub fn log_softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = row.iter().map(|&x| ((x - max) as f64).exp()).sum();
    let log_z = max as f64 + sum.ln();
    row.iter().map(|&x| (x as f64 - log_z) as f32).collect()
}

/// Positions `from..` of `xs`: `(1, t, d) -> (1, t - from, d)`.
pub fn positions_from(xs: &Tensor, from: usize) -> Result<Tensor> {
    let t = xs.dim(D::Minus2)?;
    Ok(xs.narrow(D::Minus2, from, t - from)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_window_mask_keeps_the_last_window_positions() {
        // Queries at positions 3 and 4 (2 new tokens after 3 cached), window 2.
        let mask = attention_mask(2, 3, Some(2))
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let seen = |row: &[f32]| -> Vec<usize> {
            row.iter()
                .enumerate()
                .filter(|(_, m)| m.is_finite())
                .map(|(k, _)| k)
                .collect()
        };
        assert_eq!(seen(&mask[0]), vec![2, 3]);
        assert_eq!(seen(&mask[1]), vec![3, 4]);
        let causal = attention_mask(2, 3, None)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(seen(&causal[0]), vec![0, 1, 2, 3]);
        assert_eq!(seen(&causal[1]), vec![0, 1, 2, 3, 4]);
    }
}
