//! Labelled images borrowed from whoever loaded them, so the models trained here (the digit
//! judge, the scorer's image tower) depend on no data set loader.

use candle_core::{Device, Tensor};

use crate::{Result, SpaeError};

/// Labelled images as the models trained here read them: bytes 0-255, `N x channels x size x size`,
/// row-major, borrowed from whoever loaded them.
#[derive(Debug, Clone, Copy)]
pub struct LabeledPixels<'a> {
    pixels: &'a [u8],
    labels: &'a [u32],
    channels: usize,
    size: usize,
}

impl<'a> LabeledPixels<'a> {
    /// `pixels` must hold exactly one `channels x size x size` image per label.
    pub fn new(pixels: &'a [u8], labels: &'a [u32], channels: usize, size: usize) -> Result<Self> {
        let image_len = channels * size * size;
        if image_len == 0 || pixels.len() != labels.len() * image_len {
            return Err(SpaeError::Images(format!(
                "{} bytes of pixels for {} labels of {channels}x{size}x{size} images",
                pixels.len(),
                labels.len()
            )));
        }
        Ok(Self {
            pixels,
            labels,
            channels,
            size,
        })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn labels(&self) -> &[u32] {
        self.labels
    }

    pub fn channels(&self) -> usize {
        self.channels
    }

    /// The side of every image.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Images `indices` as a (B, C, S, S) f32 tensor in [0, 1] on the CPU.
    pub fn batch(&self, indices: &[usize]) -> Result<Tensor> {
        let n = self.channels * self.size * self.size;
        let mut data = Vec::with_capacity(indices.len() * n);
        for &i in indices {
            let image = self.pixels.get(i * n..(i + 1) * n).ok_or_else(|| {
                SpaeError::Images(format!("image {i} of {} asked for", self.len()))
            })?;
            data.extend(image.iter().map(|&b| b as f32 / 255.0));
        }
        Ok(Tensor::from_vec(
            data,
            (indices.len(), self.channels, self.size, self.size),
            &Device::Cpu,
        )?)
    }
}

/// The image indices of a batch `idx` that a per-image cache `kept` does not hold yet, sorted,
/// each once: what the cache computes before it answers the batch (a training run draws every
/// image many times, and what a frozen network makes of it never changes).
pub fn not_kept<V>(kept: &std::collections::HashMap<usize, V>, idx: &[usize]) -> Vec<usize> {
    let mut missing: Vec<usize> = idx
        .iter()
        .copied()
        .filter(|i| !kept.contains_key(i))
        .collect();
    missing.sort_unstable();
    missing.dedup();
    missing
}
