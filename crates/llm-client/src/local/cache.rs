//! Key/value cache of the attention layers, truncatable so that a new request can keep the
//! entries of the prefix it shares with the previous one.

use candle_core::{Tensor, D};

use crate::error::Result;

/// Per layer, keys and values of shape `(1, n_kv_heads, seq, head_dim)`.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl KvCache {
    pub fn new(num_layers: usize) -> Self {
        Self {
            layers: vec![None; num_layers],
            len: 0,
        }
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Append `k`, `v` (seq on dim 2) for `layer`; returns all keys and values so far.
    /// The position count advances when the last layer appends.
    pub fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let slot = &mut self.layers[layer];
        let (k, v) = match slot.take() {
            None => (k.clone(), v.clone()),
            Some((k0, v0)) => (Tensor::cat(&[&k0, k], 2)?, Tensor::cat(&[&v0, v], 2)?),
        };
        *slot = Some((k.clone(), v.clone()));
        if layer + 1 == self.layers.len() {
            self.len = k.dim(2)?;
        }
        Ok((k, v))
    }

    /// Keep the first `len` positions.
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len >= self.len {
            return Ok(());
        }
        for slot in &mut self.layers {
            *slot = match slot.take() {
                Some((k, v)) if len > 0 => Some((
                    k.narrow(D::Minus2, 0, len)?.contiguous()?,
                    v.narrow(D::Minus2, 0, len)?.contiguous()?,
                )),
                _ => None,
            };
        }
        self.len = len;
        Ok(())
    }

    pub fn clear(&mut self) {
        for slot in &mut self.layers {
            *slot = None;
        }
        self.len = 0;
    }
}
