//! Key/value cache of the attention layers, truncatable so that a new request can keep the
//! entries of the prefix it shares with the previous one.
//!
//! Per layer, keys and values live in one growing buffer each, position-major (`[position]
//! [kv_head][head_dim]`): appending a token's rows writes only those rows (a tensor
//! concatenation would copy the whole cache every step), and truncating is a length change.
//! The attention kernel reads the buffers in place.

use candle_core::Tensor;

use crate::error::Result;

/// Positions by which a layer's buffers grow: a few reallocations over a long prompt, and at
/// most this many positions of unused capacity.
const GROW: usize = 512;

#[derive(Debug, Clone, Default)]
struct LayerCache {
    k: Vec<f32>,
    v: Vec<f32>,
    /// Values per position: kv_heads * head_dim.
    row: usize,
}

#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<LayerCache>,
    len: usize,
}

impl KvCache {
    pub fn new(num_layers: usize) -> Self {
        Self {
            layers: vec![LayerCache::default(); num_layers],
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

    /// Append the keys and values of new positions for `layer`: `(1, t, kv_heads, head_dim)`
    /// each (position-major). The position count advances when the last layer appends.
    pub fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<()> {
        let (_, t, heads, d) = k.dims4()?;
        let slot = &mut self.layers[layer];
        slot.row = heads * d;
        let k = k.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let v = v.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let needed = slot.k.len() + k.len();
        if needed > slot.k.capacity() {
            let positions = (needed / slot.row).next_multiple_of(GROW);
            let extra = positions * slot.row - slot.k.len();
            slot.k.reserve_exact(extra);
            slot.v.reserve_exact(extra);
        }
        slot.k.extend_from_slice(&k);
        slot.v.extend_from_slice(&v);
        if layer + 1 == self.layers.len() {
            self.len += t;
        }
        Ok(())
    }

    /// Keys and values of `layer` so far, position-major, and the values per position.
    pub fn layer(&self, layer: usize) -> (&[f32], &[f32], usize) {
        let slot = &self.layers[layer];
        (&slot.k, &slot.v, slot.row)
    }

    /// Keep the first `len` positions.
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len >= self.len {
            return Ok(());
        }
        for slot in &mut self.layers {
            slot.k.truncate(len * slot.row);
            slot.v.truncate(len * slot.row);
        }
        self.len = len;
        Ok(())
    }

    pub fn clear(&mut self) {
        for slot in &mut self.layers {
            *slot = LayerCache::default();
        }
        self.len = 0;
    }
}
