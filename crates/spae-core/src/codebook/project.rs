//! A frozen linear projection of the codebook to a few dimensions **(ours)**.
//!
//! Nearest-neighbour search costs positions x entries x dim, and with Gemma 3's 640-dim rows
//! it dominated both training and encoding. The words stay the LLM's own; only the space the
//! encoder lands in shrinks: rows are centred, projected on their top principal components
//! (found once, deterministically, by subspace iteration) and scaled to unit norm, so SAQ's
//! premise (every entry on the same scale; SPAE paper, Sec. 3.2) still holds.
//! Words that are close in the LLM's space stay close along the directions of most variance.

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use super::{Codebook, CodebookInfo};
use crate::{Result, SpaeError};

/// How a codebook's rows were derived from the LLM's embedding rows; stored in checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Projection {
    /// Centred, projected on the top `dim` principal components of the kept rows, L2-normalised.
    Pca { source_dim: usize, dim: usize },
}

/// Subspace-iteration rounds: the top components of an embedding table separate fast.
const ROUNDS: usize = 60;

impl Codebook {
    /// This codebook with its rows replaced by their PCA projection to `dim` dimensions
    /// (unit norm). Deterministic: the same rows always give the same projection.
    pub fn project_pca(&self, dim: usize) -> Result<Codebook> {
        let (v, d) = self.embeddings().dims2()?;
        if dim == 0 || dim > d || dim > v {
            return Err(SpaeError::Config(format!(
                "cannot project {v} rows of dim {d} to {dim} dimensions"
            )));
        }
        let rows: Vec<f32> = self
            .embeddings()
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        let mut mean = vec![0f64; d];
        for r in rows.chunks_exact(d) {
            for (m, &x) in mean.iter_mut().zip(r) {
                *m += x as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= v as f64);
        // Covariance (d x d) of the centred rows.
        let centred: Vec<f64> = rows
            .chunks_exact(d)
            .flat_map(|r| r.iter().zip(&mean).map(|(&x, m)| x as f64 - m))
            .collect();
        let x = Tensor::from_vec(centred, (v, d), &candle_core::Device::Cpu)?;
        let cov = (x.t()?.matmul(&x)? / v as f64)?;
        let basis = top_components(&cov, dim)?; // (d, dim)
        let projected = x.matmul(&basis)?;
        let norms = projected
            .sqr()?
            .sum_keepdim(1)?
            .sqrt()?
            .clamp(1e-12, f64::MAX)?;
        let unit = projected
            .broadcast_div(&norms)?
            .to_dtype(DType::F32)?
            .to_device(self.embeddings().device())?;
        let info = CodebookInfo {
            projection: Some(Projection::Pca { source_dim: d, dim }),
            ..self.info().clone()
        };
        Codebook::new(
            info,
            self.token_ids().to_vec(),
            self.pieces().to_vec(),
            unit,
        )
    }
}

/// The top `k` eigenvectors of the symmetric (d, d) f64 matrix `cov`, as columns (d, k),
/// strongest first, each with its largest-magnitude coordinate positive.
fn top_components(cov: &Tensor, k: usize) -> Result<Tensor> {
    let d = cov.dims2()?.0;
    // A fixed, full-rank start: deterministic without an RNG.
    let start: Vec<f64> = (0..d * k)
        .map(|i| {
            let h = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            ((h >> 11) as f64 / (1u64 << 53) as f64) - 0.5
        })
        .collect();
    let mut q = orthonormal_columns(Tensor::from_vec(start, (d, k), cov.device())?)?;
    for _ in 0..ROUNDS {
        q = orthonormal_columns(cov.matmul(&q)?)?;
    }
    // Rayleigh quotients order the columns; fix each column's sign.
    let cq = cov.matmul(&q)?;
    let cols: Vec<Vec<f64>> = q.t()?.to_vec2()?;
    let ccols: Vec<Vec<f64>> = cq.t()?.to_vec2()?;
    let mut order: Vec<(f64, Vec<f64>)> = cols
        .into_iter()
        .zip(ccols)
        .map(|(c, cc)| {
            let lambda: f64 = c.iter().zip(&cc).map(|(a, b)| a * b).sum();
            let big = c
                .iter()
                .copied()
                .fold(0f64, |m, x| if x.abs() > m.abs() { x } else { m });
            let sign = if big < 0.0 { -1.0 } else { 1.0 };
            (lambda, c.into_iter().map(|x| x * sign).collect())
        })
        .collect();
    order.sort_by(|a, b| b.0.total_cmp(&a.0));
    let flat: Vec<f64> = order.into_iter().flat_map(|(_, c)| c).collect();
    Ok(Tensor::from_vec(flat, (k, d), cov.device())?
        .t()?
        .contiguous()?)
}

/// Modified Gram-Schmidt on the columns of (d, k).
fn orthonormal_columns(m: Tensor) -> Result<Tensor> {
    let (_, k) = m.dims2()?;
    let mut cols: Vec<Vec<f64>> = m.t()?.to_vec2()?;
    for i in 0..k {
        for j in 0..i {
            let (done, rest) = cols.split_at_mut(i);
            let dot: f64 = rest[0].iter().zip(&done[j]).map(|(a, b)| a * b).sum();
            for (a, b) in rest[0].iter_mut().zip(&done[j]) {
                *a -= dot * b;
            }
        }
        let n = cols[i]
            .iter()
            .map(|a| a * a)
            .sum::<f64>()
            .sqrt()
            .max(1e-300);
        cols[i].iter_mut().for_each(|a| *a /= n);
    }
    let d = cols.first().map_or(0, Vec::len);
    let flat: Vec<f64> = cols.into_iter().flatten().collect();
    Ok(Tensor::from_vec(flat, (k, d), m.device())?
        .t()?
        .contiguous()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codebook::{VocabFilter, WordMarker};
    use candle_core::Device;

    fn codebook(rows: Vec<f32>, v: usize, d: usize) -> Codebook {
        let info = CodebookInfo {
            source: "test".into(),
            marker: WordMarker::SentencePiece,
            filter: VocabFilter::default(),
            vocab_size: v,
            projection: None,
        };
        Codebook::new(
            info,
            (0..v as u32).collect(),
            (0..v).map(|i| format!("\u{2581}w{i}")).collect(),
            Tensor::from_vec(rows, (v, d), &Device::Cpu).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn pca_finds_the_direction_of_most_variance_and_keeps_neighbours() {
        // Points spread along (1, 1, 0) with small noise on the other axes.
        let v = 64;
        let mut rows = Vec::new();
        for i in 0..v {
            let t = i as f32 / v as f32 - 0.5;
            let n = ((i * 7919) % 13) as f32 / 13.0 - 0.5;
            rows.extend([3.0 * t + 0.01 * n, 3.0 * t - 0.01 * n, 0.05 * n]);
        }
        let cb = codebook(rows, v, 3);
        let p = cb.project_pca(2).unwrap();
        assert_eq!(p.dim(), 2);
        assert_eq!(
            p.info().projection,
            Some(Projection::Pca {
                source_dim: 3,
                dim: 2
            })
        );
        let norms: Vec<f32> = p.sq_norms().to_vec1().unwrap();
        // Normalised in f64, then each coordinate rounded to f32 (relative error <= 2^-24,
        // doubled by squaring) and the squares rounded and summed in f32 (one rounding each,
        // dim - 1 additions): |norm^2 - 1| <= (dim + 2) 2^-24 to first order. EPSILON = 2^-23
        // doubles that for the rest; a row left unnormalised is off by far more.
        let tol = (p.dim() + 2) as f32 * f32::EPSILON;
        assert!(norms.iter().all(|n| (n - 1.0).abs() <= tol), "{norms:?}");
        // Deterministic.
        let again = cb.project_pca(2).unwrap();
        let a: Vec<f32> = p.embeddings().flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = again.embeddings().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(a, b);
        // The first component separates the two ends of the line.
        let first: Vec<f32> = p
            .embeddings()
            .narrow(1, 0, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(first[0] * first[v - 1] < 0.0);
        assert!(cb.project_pca(4).is_err());
    }
}
