//! SAQ / RQ and nearest-neighbour search on random data, checked against brute force.

use candle_core::{Device, Tensor};
use rand::{rngs::StdRng, Rng, SeedableRng};
use spae_core::quantizer::{nearest, top_k, upsample};
use spae_core::{
    Codebook, CodebookInfo, PyramidConfig, QuantizerKind, SaqQuantizer, VocabFilter, WordMarker,
};

fn random(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| rng.gen_range(-1.0f32..1.0) * scale)
        .collect()
}

fn codebook(rng: &mut StdRng, v: usize, d: usize) -> Codebook {
    let info = CodebookInfo {
        source: "random".into(),
        marker: WordMarker::SentencePiece,
        filter: VocabFilter::default(),
        vocab_size: v,
        projection: None,
    };
    let rows = Tensor::from_vec(random(rng, v * d, 1.0), (v, d), &Device::Cpu).unwrap();
    let pieces = (0..v).map(|i| format!("\u{2581}w{i}")).collect();
    Codebook::new(info, (0..v as u32).collect(), pieces, rows).unwrap()
}

/// f32 roundoff in either way of computing one squared distance between `q` and `e` in d
/// dimensions: `nearest` and `top_k` sum d products (plus ||q||^2 and ||e||^2, each a sum of d
/// squares) by matmul, the brute force d squared differences; each is within (d + 2) 2^-24
/// times the sum of the magnitudes it adds, ||q||^2 + ||e||^2 + 2 sum |q_i e_i|, of exact.
fn distance_roundoff(q: &[f32], e: &[f32]) -> f32 {
    let d = q.len() as f32;
    let mags: f32 = q
        .iter()
        .zip(e)
        .map(|(a, b)| a * a + b * b + 2.0 * (a * b).abs())
        .sum();
    (d + 2.0) * f32::EPSILON / 2.0 * mags
}

/// Squared distance in f64: the exact one, to f32's precision.
fn exact_distance(q: &[f32], e: &[f32]) -> f64 {
    q.iter()
        .zip(e)
        .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
        .sum()
}

fn brute_nearest(q: &[f32], rows: &[Vec<f32>]) -> usize {
    let dist = |r: &Vec<f32>| r.iter().zip(q).map(|(a, b)| (a - b) * (a - b)).sum::<f32>();
    (0..rows.len())
        .min_by(|&a, &b| dist(&rows[a]).total_cmp(&dist(&rows[b])))
        .unwrap()
}

/// `nearest`'s answer for every query is the brute-force nearest entry, up to near-ties.
fn assert_nearest_is_brute_force(q: &Tensor, cb: &Codebook) {
    let rows: Vec<Vec<f32>> = cb.embeddings().to_vec2().unwrap();
    let got: Vec<u32> = nearest(q, cb).unwrap().to_vec1().unwrap();
    let qs: Vec<Vec<f32>> = q.to_vec2().unwrap();
    assert_eq!(got.len(), qs.len());
    for (i, qi) in qs.iter().enumerate() {
        // The same entry, unless the two are a near-tie: exactly closer by less than the two
        // distances' roundoff in both computations, where either may win on some CPU.
        let (g, b) = (got[i] as usize, brute_nearest(qi, &rows));
        if g != b {
            let gap = (exact_distance(qi, &rows[g]) - exact_distance(qi, &rows[b])).abs();
            let tie = 2.0 * (distance_roundoff(qi, &rows[g]) + distance_roundoff(qi, &rows[b]));
            assert!(gap <= tie as f64, "query {i}: {g} vs {b}, {gap} apart");
        }
    }
}

#[test]
fn large_codebook_search_spans_blocks() {
    // 30,000 entries: the search takes the queries in blocks of 139 rows, so 400 queries
    // cross two block boundaries and end in a partial block.
    let mut rng = StdRng::seed_from_u64(7);
    let cb = codebook(&mut rng, 30_000, 16);
    let q = Tensor::from_vec(random(&mut rng, 400 * 16, 1.5), (400, 16), &Device::Cpu).unwrap();
    assert_nearest_is_brute_force(&q, &cb);
}

#[test]
fn batched_nearest_equals_brute_force() {
    let mut rng = StdRng::seed_from_u64(1);
    let cb = codebook(&mut rng, 500, 16);
    let rows: Vec<Vec<f32>> = cb.embeddings().to_vec2().unwrap();
    let q = Tensor::from_vec(random(&mut rng, 64 * 16, 1.5), (64, 16), &Device::Cpu).unwrap();
    assert_nearest_is_brute_force(&q, &cb);
    let got: Vec<u32> = nearest(&q, &cb).unwrap().to_vec1().unwrap();
    let qs: Vec<Vec<f32>> = q.to_vec2().unwrap();
    let (idx, dist) = top_k(&q, &cb, 5).unwrap();
    let idx: Vec<Vec<u32>> = idx.to_vec2().unwrap();
    let dist: Vec<Vec<f32>> = dist.to_vec2().unwrap();
    for i in 0..qs.len() {
        // `top_k` and `nearest` compute the distances by different sums: the same near-tie
        // caveat as above.
        let (t, g) = (idx[i][0] as usize, got[i] as usize);
        if t != g {
            let gap = (exact_distance(&qs[i], &rows[t]) - exact_distance(&qs[i], &rows[g])).abs();
            let tie =
                2.0 * (distance_roundoff(&qs[i], &rows[t]) + distance_roundoff(&qs[i], &rows[g]));
            assert!(
                gap <= tie as f64,
                "query {i}: top_k {t} vs nearest {g}, {gap} apart"
            );
        }
        assert!(
            dist[i].windows(2).all(|w| w[0] <= w[1]),
            "sorted nearest first"
        );
        let mut all: Vec<f32> = rows
            .iter()
            .map(|r| r.iter().zip(&qs[i]).map(|(a, b)| (a - b) * (a - b)).sum())
            .collect();
        all.sort_by(f32::total_cmp);
        // The k-th smallest of two lists that differ entry by entry by at most t differ by at
        // most t: t is the largest roundoff of either computation over the codebook, twice.
        // 6e-5 to 1.2e-4 here; measured differences are at most 4e-6.
        let t = rows
            .iter()
            .map(|r| 2.0 * distance_roundoff(&qs[i], r))
            .fold(0f32, f32::max);
        for k in 0..5 {
            assert!((all[k] - dist[i][k]).abs() <= t, "query {i} rank {k}");
        }
    }
}

fn setup(kind: QuantizerKind) -> (SaqQuantizer, Codebook, Tensor) {
    let mut rng = StdRng::seed_from_u64(7);
    // A low-dim, dense codebook, so each layer's target can be met closely.
    let cb = codebook(&mut rng, 4096, 4);
    let q = SaqQuantizer::new(PyramidConfig::new(8, vec![1, 2, 4, 8, 8]).unwrap(), kind).unwrap();
    let z = Tensor::from_vec(
        random(&mut rng, 3 * 8 * 8 * 4, 0.8),
        (3, 8, 8, 4),
        &Device::Cpu,
    )
    .unwrap();
    (q, cb, z)
}

/// "Non-increasing" up to rounding: each error is an f32 mean of n = 3 * 8 * 8 * 4 = 768
/// squares, within n 2^-24 of exact relative to itself, so two equal errors may come out up to
/// 2 n 2^-24 apart. (Measured gaps between depths are at least 0.01, thousands of times that.)
const MSE_SLACK: f32 = 1.0 + 2.0 * 768.0 * f32::EPSILON / 2.0;

fn mse(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .sqr()
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar()
        .unwrap()
}

#[test]
fn saq_reconstruction_is_the_mean_of_upsampled_embeddings() {
    let (q, cb, z) = setup(QuantizerKind::Saq);
    let out = q.quantize(&z, &cb, 5).unwrap();
    let mut ups = Vec::new();
    for (l, idx) in out.indices.iter().enumerate() {
        let (b, s, _) = idx.dims3().unwrap();
        let e = cb
            .embeddings()
            .index_select(&idx.flatten_all().unwrap(), 0)
            .unwrap()
            .reshape((b, s, s, 4))
            .unwrap();
        ups.push(upsample(&e, 8 / s).unwrap());
        let mean = (Tensor::stack(&ups, 0).unwrap().sum(0).unwrap() / ups.len() as f64).unwrap();
        // Exact: the sum over the stack adds E_1, E_2, ... to 0 in order, as `quantize` does,
        // and both divide by l the same way.
        assert_eq!(mse(&mean, &out.recon[l]), 0.0, "depth {}", l + 1);
        // dequantize is the inverse of quantize's indices: the same additions, exactly.
        let back = q.dequantize(&out.indices[..=l], &cb).unwrap();
        assert_eq!(mse(&back, &out.recon[l]), 0.0);
    }
}

#[test]
fn saq_error_is_non_increasing_with_depth() {
    let (q, cb, z) = setup(QuantizerKind::Saq);
    let out = q.quantize(&z, &cb, 5).unwrap();
    let errs: Vec<f32> = out.recon.iter().map(|r| mse(r, &z)).collect();
    assert!(
        errs.windows(2).all(|w| w[1] <= w[0] * MSE_SLACK),
        "{errs:?}"
    );
    // Measured: 0.46 -> 0.041, a tenth.
    assert!(
        errs[4] < errs[0] * 0.2,
        "full depth should be far better: {errs:?}"
    );
}

#[test]
fn rq_reconstruction_is_the_sum_and_error_is_non_increasing() {
    let (q, cb, z) = setup(QuantizerKind::Rq);
    let out = q.quantize(&z, &cb, 5).unwrap();
    let back = q.dequantize(&out.indices[..2], &cb).unwrap();
    let first_two = (q.dequantize(&out.indices[..1], &cb).unwrap() + {
        let idx = &out.indices[1];
        let e = cb
            .embeddings()
            .index_select(&idx.flatten_all().unwrap(), 0)
            .unwrap()
            .reshape((3, 2, 2, 4))
            .unwrap();
        upsample(&e, 4).unwrap()
    })
    .unwrap();
    // Exact: E_1 + E_2, added the same way on both sides.
    assert_eq!(mse(&back, &first_two), 0.0, "RQ recon = S_l, not the mean");
    let errs: Vec<f32> = out.recon.iter().map(|r| mse(r, &z)).collect();
    assert!(
        errs.windows(2).all(|w| w[1] <= w[0] * MSE_SLACK),
        "{errs:?}"
    );
}

#[test]
fn wrong_grid_or_dim_is_an_error() {
    let (q, cb, _) = setup(QuantizerKind::Saq);
    let z = Tensor::zeros((1, 4, 4, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(q
        .quantize(&z, &cb, 1)
        .unwrap_err()
        .to_string()
        .contains("grid"));
    let z = Tensor::zeros((1, 8, 8, 5), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(q
        .quantize(&z, &cb, 1)
        .unwrap_err()
        .to_string()
        .contains("dim"));
    let z = Tensor::zeros((1, 8, 8, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(q.quantize(&z, &cb, 6).is_err(), "depth beyond the pyramid");
}
