//! Blocks shared by the model files: RMS norm, rotary embedding, masked grouped-query
//! attention. Written once here instead of once per model.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor, D};

use super::cache::KvCache;
use super::kernels::{
    CausalAttention, GatedActivation, GatedLinearUnit, Int8Linear, QuantMatrix, Span,
};

use crate::error::{LlmError, Result};

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

    /// Rotate `xs` of shape `(1, heads, t, head_dim)` holding `positions` (one per row).
    pub fn apply(&self, xs: &Tensor, positions: &[usize]) -> Result<Tensor> {
        let t = xs.dim(2)?;
        let first = positions.first().copied().unwrap_or(0);
        let consecutive = positions.iter().enumerate().all(|(i, &p)| p == first + i);
        let (cos, sin) = if consecutive && positions.len() == t {
            (self.cos.narrow(0, first, t)?, self.sin.narrow(0, first, t)?)
        } else {
            let ids: Vec<u32> = positions.iter().map(|&p| p as u32).collect();
            let ids = Tensor::from_vec(ids, positions.len(), &Device::Cpu)?;
            (
                self.cos.index_select(&ids, 0)?,
                self.sin.index_select(&ids, 0)?,
            )
        };
        let xs = xs.contiguous()?;
        Ok(match self.layout {
            RopeLayout::Halves => candle_nn::rotary_emb::rope(&xs, &cos, &sin)?,
            RopeLayout::Interleaved => candle_nn::rotary_emb::rope_i(&xs, &cos, &sin)?,
        })
    }
}

/// Causal grouped-query attention over the keys and values of `cache`'s `layer` (the new
/// positions of `span` already appended after `offset` cached ones), each query seeing the last
/// `window` positions of its sequence (itself included) or, without one, every earlier
/// position. `q`: `(1, heads, t, d)` already scaled. Returns `(1, t, heads * d)`.
pub fn attention(
    q: &Tensor,
    cache: &KvCache,
    layer: usize,
    offset: usize,
    span: &Span,
    window: Option<usize>,
) -> Result<Tensor> {
    let (_, heads, t, d) = q.dims4()?;
    let (k, v, row) = cache.layer(layer);
    let kv_heads = row / d.max(1);
    let total = offset + t;
    if kv_heads == 0 || heads % kv_heads != 0 || k.len() != total * row || span.len() != t {
        return Err(LlmError::Tensor(candle_core::Error::Msg(format!(
            "attention: {heads} query heads of {d} against {} cached values per position, {} \
             positions for {t} queries ({} in the span) after {offset}",
            row,
            k.len() / row.max(1),
            span.len()
        ))));
    }
    let q = q.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    let out =
        CausalAttention { offset, window }.run_span(span, &q, heads, d, k, v, kv_heads, total);
    Ok(Tensor::from_vec(out, (1, t, heads * d), &Device::Cpu)?)
}

/// A linear layer without bias, `xs @ w.T`, run by the int8 kernels (`super::kernels`).
#[derive(Debug, Clone)]
pub struct Linear(Arc<QuantMatrix>);

impl Linear {
    pub fn new(w: Arc<QuantMatrix>) -> Self {
        Self(w)
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        Ok(xs
            .contiguous()?
            .apply_op1_no_bwd(&Int8Linear(self.0.clone()))?)
    }
}

/// A feed-forward block's gated projection `act(x W_gate^T) * (x W_up^T)`, as one matmul by
/// the stacked `[W_gate; W_up]` and one fused activation.
#[derive(Debug, Clone)]
pub struct GatedUp {
    gate_up: Linear,
    act: GatedActivation,
}

impl GatedUp {
    pub fn new(gate: &QuantMatrix, up: &QuantMatrix, act: GatedActivation) -> Result<Self> {
        let stacked = QuantMatrix::stack(&[gate, up])
            .map_err(|e| LlmError::Tensor(candle_core::Error::Msg(format!("gate/up: {e}"))))?;
        Ok(Self {
            gate_up: Linear::new(Arc::new(stacked)),
            act,
        })
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let both = self.gate_up.forward(xs)?;
        Ok(both.apply_op1_no_bwd(&GatedLinearUnit(self.act))?)
    }
}

/// Rows `ids` of the token embedding `(vocab, dim)`, as `(1, ids.len(), dim)` f32.
pub fn embed(table: &QuantMatrix, ids: &[u32]) -> Result<Tensor> {
    let dim = table.cols();
    let mut data = Vec::with_capacity(ids.len() * dim);
    for &id in ids {
        if id as usize >= table.rows() {
            return Err(crate::error::LlmError::TokenOutOfRange {
                id,
                vocab: table.rows(),
            });
        }
        data.extend(table.row_f32(id as usize));
    }
    Ok(Tensor::from_vec(data, (1, ids.len(), dim), &Device::Cpu)?)
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
