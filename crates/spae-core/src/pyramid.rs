//! The token pyramid and dilation subsampling (SPAE paper, Sec. 3.1).
//!
//! Layer l holds s_l x s_l tokens read from the encoder's G x G grid at evenly spread
//! positions, so the first layers are few tokens that summarise the whole image
//! (the semantic layers) and later layers add detail.

use serde::{Deserialize, Serialize};

use crate::{Result, SpaeError};

/// Layer sides of a token pyramid over a G x G grid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PyramidConfig {
    /// G: side of the encoder's output grid.
    pub grid: usize,
    /// s_1 <= s_2 <= ...: side of each layer; each divides G. Layers after the first
    /// full-resolution one repeat G.
    pub layers: Vec<usize>,
}

impl PyramidConfig {
    /// A validated pyramid.
    pub fn new(grid: usize, layers: Vec<usize>) -> Result<Self> {
        let cfg = Self { grid, layers };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The paper's pyramid on G = 16: 1, 2, 4, 8, 16, 16 (597 tokens).
    pub fn paper() -> Self {
        Self {
            grid: 16,
            layers: vec![1, 2, 4, 8, 16, 16],
        }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(SpaeError::Pyramid(m));
        if self.grid == 0 {
            return bad("grid must be at least 1".into());
        }
        if self.layers.is_empty() {
            return bad("a pyramid needs at least one layer".into());
        }
        for (l, &s) in self.layers.iter().enumerate() {
            if s == 0 || !self.grid.is_multiple_of(s) {
                return bad(format!(
                    "layer {} has side {s}, which does not divide the grid {}",
                    l + 1,
                    self.grid
                ));
            }
            if l > 0 && s < self.layers[l - 1] {
                return bad(format!(
                    "layer sides must not decrease: layer {} has {s} after {}",
                    l + 1,
                    self.layers[l - 1]
                ));
            }
        }
        Ok(())
    }

    /// Number of layers.
    pub fn depth(&self) -> usize {
        self.layers.len()
    }

    /// Side s_l of layer `layer` (0-indexed).
    pub fn side(&self, layer: usize) -> usize {
        self.layers[layer]
    }

    /// Stride r = G / s_l of layer `layer` (0-indexed).
    pub fn stride(&self, layer: usize) -> usize {
        self.grid / self.layers[layer]
    }

    /// Tokens in layer `layer` (0-indexed).
    pub fn layer_len(&self, layer: usize) -> usize {
        self.layers[layer] * self.layers[layer]
    }

    /// Tokens in the first `depth` layers.
    pub fn tokens_up_to(&self, depth: usize) -> usize {
        (0..depth.min(self.depth()))
            .map(|l| self.layer_len(l))
            .sum()
    }

    /// Grid positions layer `layer` (0-indexed) reads along one axis: `r*i + floor(r/2)`
    /// (the paper's 1-indexed `r*i - ceil(r/2) + 1`, shifted to 0-indexing).
    pub fn positions(&self, layer: usize) -> Vec<usize> {
        let r = self.stride(layer);
        (0..self.side(layer)).map(|i| r * i + r / 2).collect()
    }

    /// Check a requested depth against this pyramid.
    pub fn check_depth(&self, depth: usize) -> Result<()> {
        if depth == 0 || depth > self.depth() {
            return Err(SpaeError::Pyramid(format!(
                "depth {depth} is out of range: this pyramid has layers 1..={}",
                self.depth()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_pyramid_positions_follow_the_formula() {
        let p = PyramidConfig::paper();
        p.validate().unwrap();
        // 1-indexed formula from the paper: r*i - ceil(r/2) + 1, i = 1..s.
        for l in 0..5 {
            let r = p.stride(l);
            let expected: Vec<usize> = (1..=p.side(l))
                .map(|i| r * i - r.div_ceil(2) + 1 - 1)
                .collect();
            assert_eq!(p.positions(l), expected, "layer {}", l + 1);
        }
        assert_eq!(p.positions(0), vec![8]);
        assert_eq!(p.positions(1), vec![4, 12]);
        assert_eq!(p.positions(2), vec![2, 6, 10, 14]);
        assert_eq!(p.positions(3), vec![1, 3, 5, 7, 9, 11, 13, 15]);
        assert_eq!(p.positions(4), (0..16).collect::<Vec<_>>());
    }

    #[test]
    fn paper_pyramid_token_counts() {
        let p = PyramidConfig::paper();
        let counts: Vec<usize> = (0..p.depth()).map(|l| p.layer_len(l)).collect();
        assert_eq!(counts, vec![1, 4, 16, 64, 256, 256]);
        assert_eq!(p.tokens_up_to(6), 597);
        assert_eq!(p.tokens_up_to(2), 5);
        assert_eq!(p.tokens_up_to(3), 21);
    }

    #[test]
    fn invalid_pyramids_are_rejected() {
        assert!(PyramidConfig::new(16, vec![]).is_err());
        assert!(PyramidConfig::new(16, vec![1, 3]).is_err());
        assert!(PyramidConfig::new(16, vec![4, 2]).is_err());
        assert!(PyramidConfig::new(8, vec![1, 2, 4, 8, 8]).is_ok());
        let err = PyramidConfig::paper().check_depth(7).unwrap_err();
        assert!(err.to_string().contains("depth 7"), "{err}");
    }
}
