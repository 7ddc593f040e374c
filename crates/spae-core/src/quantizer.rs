//! Streaming Average Quantization (SPAE paper, Sec. 3.2), and residual quantization (RQ) for the
//! ablation.
//!
//! With E_l the chosen embeddings of layer l upsampled to G x G and S_l = E_1 + ... + E_l:
//! SAQ reconstructs zhat_l = S_l / l and quantizes layer l's target t_l = l*z - S_{l-1};
//! RQ reconstructs zhat_l = S_l and quantizes t_l = z - S_{l-1}. Frozen word embeddings all
//! have about the same norm, so RQ's shrinking residuals fall off the codebook's scale;
//! SAQ's running mean keeps every target on it.

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::codebook::Codebook;
use crate::pyramid::PyramidConfig;
use crate::{Result, SpaeError};

/// Which quantization rule a pyramid uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuantizerKind {
    /// Streaming average quantization (the paper's).
    #[default]
    Saq,
    /// Residual quantization (ablation).
    Rq,
}

/// Squared L2 distances between each query row and each codebook row: (N, d) -> (N, V),
/// computed as ||q||^2 - 2 q.e + ||e||^2 with one matmul.
pub fn sq_distances(queries: &Tensor, codebook: &Codebook) -> Result<Tensor> {
    let q_sq = queries.sqr()?.sum_keepdim(1)?; // (N, 1)
    let dots = queries.matmul(&codebook.embeddings().t()?)?; // (N, V)
    let d = (dots * -2.0)?
        .broadcast_add(&q_sq)?
        .broadcast_add(&codebook.sq_norms().unsqueeze(0)?)?;
    Ok(d)
}

/// Scores per block of the nearest-neighbour search (16 MiB of f32): the (rows x V) score
/// block stays in cache-friendly sizes instead of one (N x V) matrix for a whole batch, for a
/// codebook of 4,096 entries (1,024 rows a block) as for one of 30,732 (136 rows).
const SEARCH_BLOCK_SCORES: usize = 1 << 22;

/// Query rows per block for a codebook of `v` entries.
fn search_block(v: usize) -> usize {
    (SEARCH_BLOCK_SCORES / v.max(1)).clamp(64, 1024)
}

/// Index of the nearest codebook entry for each query row: (N, d) -> (N,) u32.
pub fn nearest(queries: &Tensor, codebook: &Codebook) -> Result<Tensor> {
    let n = queries.dims()[0];
    if !queries.device().is_cpu() {
        return Ok(search_scores(queries, codebook)?.argmin(1)?);
    }
    let mut out = Vec::with_capacity(n);
    let block = search_block(codebook.len());
    for start in (0..n).step_by(block) {
        let rows = block.min(n - start);
        let scores = search_scores(&queries.narrow(0, start, rows)?, codebook)?;
        argmin_rows_cpu(&scores, &mut out)?;
    }
    Ok(Tensor::from_vec(out, n, queries.device())?)
}

/// ||e||^2 - 2 q.e for every (query, entry): ||q||^2 is the same for every entry of a row, so
/// argmin needs only this, which one matmul of [q, 1] with the codebook's precomputed search
/// matrix gives.
fn search_scores(queries: &Tensor, codebook: &Codebook) -> Result<Tensor> {
    let ones = Tensor::ones((queries.dims()[0], 1), queries.dtype(), queries.device())?;
    Ok(Tensor::cat(&[queries, &ones], 1)?.matmul(codebook.search_matrix())?)
}

/// Row-wise argmin of a contiguous (rows, V) f32 CPU tensor, appended to `out`; a plain loop
/// over the storage (candle's generic reduction was the slowest part of encoding).
fn argmin_rows_cpu(scores: &Tensor, out: &mut Vec<u32>) -> Result<()> {
    let (_, v) = scores.dims2()?;
    let scores = scores.contiguous()?;
    let (storage, layout) = scores.storage_and_layout();
    let data = match &*storage {
        candle_core::Storage::Cpu(cpu) => {
            crate::im2col::contiguous_f32(cpu, layout, "argmin_rows_cpu")?
        }
        _ => {
            return Err(SpaeError::Config(
                "argmin_rows_cpu on a non-CPU tensor".into(),
            ))
        }
    };
    for row in data.chunks_exact(v) {
        let mut best = 0usize;
        let mut best_v = f32::INFINITY;
        for (i, &x) in row.iter().enumerate() {
            if x < best_v {
                best_v = x;
                best = i;
            }
        }
        out.push(best as u32);
    }
    Ok(())
}

/// The `k` nearest entries of each query row, nearest first: (indices (N, k) u32,
/// squared distances (N, k)).
pub fn top_k(queries: &Tensor, codebook: &Codebook, k: usize) -> Result<(Tensor, Tensor)> {
    let k = k.min(codebook.len());
    let d = sq_distances(queries, codebook)?;
    let order = d.arg_sort_last_dim(true)?.narrow(1, 0, k)?.contiguous()?;
    let dist = d.gather(&order, 1)?;
    Ok((order, dist))
}

/// Read `x` (B, G, G, d) at the grid positions `pos` along both spatial axes: (B, s, s, d).
pub fn subsample(x: &Tensor, pos: &Tensor) -> Result<Tensor> {
    Ok(x.index_select(pos, 1)?.index_select(pos, 2)?)
}

/// Nearest upsampling by `r` along both spatial axes: (B, s, s, d) -> (B, s*r, s*r, d).
/// Each coarse token stands for its whole r x r block.
pub fn upsample(x: &Tensor, r: usize) -> Result<Tensor> {
    if r == 1 {
        return Ok(x.clone());
    }
    let (b, s, _, d) = x.dims4()?;
    // (b, s, s, d) -> (b, s, 1, s, 1, d) -> (b, s, r, s, r, d) -> (b, s*r, s*r, d)
    let up = x
        .reshape((b, s, 1, s, 1, d))?
        .broadcast_as((b, s, r, s, r, d))?
        .contiguous()?
        .reshape((b, s * r, s * r, d))?;
    Ok(up)
}

/// The output of quantizing a batch down to some depth.
#[derive(Debug, Clone)]
pub struct Quantized {
    /// Per layer: (B, s_l, s_l) u32 codebook indices.
    pub indices: Vec<Tensor>,
    /// Per depth l = 1..: zhat_l, (B, G, G, d).
    pub recon: Vec<Tensor>,
    /// Per layer: its chosen embeddings E_l upsampled to (B, G, G, d).
    pub layers: Vec<Tensor>,
}

/// Quantizes an encoder grid into a token pyramid of frozen codebook entries.
#[derive(Debug, Clone)]
pub struct SaqQuantizer {
    pyramid: PyramidConfig,
    kind: QuantizerKind,
}

impl SaqQuantizer {
    pub fn new(pyramid: PyramidConfig, kind: QuantizerKind) -> Result<Self> {
        pyramid.validate()?;
        Ok(Self { pyramid, kind })
    }

    pub fn pyramid(&self) -> &PyramidConfig {
        &self.pyramid
    }

    pub fn kind(&self) -> QuantizerKind {
        self.kind
    }

    /// Layer `layer`'s grid positions along one axis, as an index tensor on `z`'s device.
    pub(crate) fn positions(&self, layer: usize, z: &Tensor) -> Result<Tensor> {
        let pos: Vec<u32> = self
            .pyramid
            .positions(layer)
            .iter()
            .map(|&p| p as u32)
            .collect();
        Ok(Tensor::new(pos.as_slice(), z.device())?)
    }

    fn check_grid(&self, z: &Tensor, codebook: &Codebook) -> Result<(usize, usize)> {
        let (b, g, g2, d) = z.dims4()?;
        if g != self.pyramid.grid || g2 != self.pyramid.grid {
            return Err(SpaeError::Config(format!(
                "encoder grid is {g}x{g2}, the pyramid expects {0}x{0}",
                self.pyramid.grid
            )));
        }
        if d != codebook.dim() {
            return Err(SpaeError::Config(format!(
                "encoder dim {d} differs from the codebook dim {}",
                codebook.dim()
            )));
        }
        Ok((b, d))
    }

    /// Quantize `z` (B, G, G, d) into the first `depth` layers.
    pub fn quantize(&self, z: &Tensor, codebook: &Codebook, depth: usize) -> Result<Quantized> {
        self.pyramid.check_depth(depth)?;
        let (b, d) = self.check_grid(z, codebook)?;
        let z = z.to_dtype(DType::F32)?;
        let mut sum = z.zeros_like()?;
        let mut out = Quantized {
            indices: Vec::with_capacity(depth),
            recon: Vec::with_capacity(depth),
            layers: Vec::with_capacity(depth),
        };
        for layer in 0..depth {
            let l = (layer + 1) as f64;
            let s = self.pyramid.side(layer);
            let pos = self.positions(layer, &z)?;
            let z_p = subsample(&z, &pos)?;
            let sum_p = subsample(&sum, &pos)?;
            let target = match self.kind {
                QuantizerKind::Saq => ((z_p * l)? - sum_p)?,
                QuantizerKind::Rq => (z_p - sum_p)?,
            };
            let idx = nearest(&target.reshape((b * s * s, d))?, codebook)?;
            let e = codebook
                .embeddings()
                .index_select(&idx, 0)?
                .reshape((b, s, s, d))?;
            let up = upsample(&e, self.pyramid.stride(layer))?;
            sum = (sum + &up)?;
            out.layers.push(up);
            out.recon.push(self.finish(&sum, layer + 1)?);
            out.indices.push(idx.reshape((b, s, s))?);
        }
        Ok(out)
    }

    /// zhat_l from S_l, the sum of the first l layers: S_l / l (SAQ) or S_l (RQ). Linear in
    /// `sum`, so it also scales one layer's E_l as zhat_l scales it.
    pub fn finish(&self, sum: &Tensor, l: usize) -> Result<Tensor> {
        Ok(match self.kind {
            QuantizerKind::Saq => (sum / l as f64)?,
            QuantizerKind::Rq => sum.clone(),
        })
    }

    /// zhat at depth `indices.len()` from per-layer indices (B, s_l, s_l): the inverse of
    /// [`SaqQuantizer::quantize`]'s indices.
    pub fn dequantize(&self, indices: &[Tensor], codebook: &Codebook) -> Result<Tensor> {
        self.recon_from_layers(&self.dequantize_layers(indices, codebook)?)
    }

    /// zhat at depth `layers.len()` from the layers' upsampled embeddings ([`Quantized::layers`]).
    pub fn recon_from_layers(&self, layers: &[Tensor]) -> Result<Tensor> {
        let (first, rest) = layers
            .split_first()
            .ok_or_else(|| SpaeError::Tokens("no layers to decode".into()))?;
        let mut sum = first.clone();
        for up in rest {
            sum = (sum + up)?;
        }
        self.finish(&sum, layers.len())
    }

    /// Each layer's embeddings upsampled to (B, G, G, d) ([`Quantized::layers`]) from
    /// per-layer indices (B, s_l, s_l).
    pub fn dequantize_layers(
        &self,
        indices: &[Tensor],
        codebook: &Codebook,
    ) -> Result<Vec<Tensor>> {
        if indices.is_empty() {
            return Err(SpaeError::Tokens("no layers to decode".into()));
        }
        self.pyramid.check_depth(indices.len())?;
        let mut layers = Vec::with_capacity(indices.len());
        for (layer, idx) in indices.iter().enumerate() {
            let (b, s, s2) = idx.dims3()?;
            if s != self.pyramid.side(layer) || s2 != s {
                return Err(SpaeError::Tokens(format!(
                    "layer {} has {s}x{s2} tokens, expected {1}x{1}",
                    layer + 1,
                    self.pyramid.side(layer)
                )));
            }
            let flat = idx.flatten_all()?;
            let e =
                codebook
                    .embeddings()
                    .index_select(&flat, 0)?
                    .reshape((b, s, s, codebook.dim()))?;
            layers.push(upsample(&e, self.pyramid.stride(layer))?);
        }
        Ok(layers)
    }
}
