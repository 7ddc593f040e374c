//! Models shared by the tests of one test binary: each loads once (about a second). And the one
//! bound, with its derivation, that every comparison of two computations of the same logits
//! uses.

#![allow(dead_code)]

use std::sync::OnceLock;

use llm_client::{KnownModel, LanguageModel, LoadOptions, LocalModel, ModelSpec};

pub fn load(model: KnownModel, reuse_prefix: bool) -> LocalModel {
    let options = LoadOptions {
        max_context: 2048,
        reuse_prefix,
        ..LoadOptions::default()
    };
    match LocalModel::load(&ModelSpec::Local(model), &options) {
        Ok(m) => m,
        Err(e) => panic!("loading {}: {e}", model.asset_name()),
    }
}

pub fn gemma() -> &'static LocalModel {
    static MODEL: OnceLock<LocalModel> = OnceLock::new();
    MODEL.get_or_init(|| load(KnownModel::Gemma3_270m, true))
}

pub fn smollm() -> &'static LocalModel {
    static MODEL: OnceLock<LocalModel> = OnceLock::new();
    MODEL.get_or_init(|| load(KnownModel::SmolLm2_135m, true))
}

/// `model` without prefix reuse and with one position per forward pass: every request then
/// computes every position's logits alone, after the same cache, with the same arithmetic in
/// the same order, whatever ran before. Equal requests give equal bits, and `score` and
/// `generate` see the same logits (not just equal to [`LOGIT_TOL`]).
fn load_from_scratch(model: KnownModel) -> LocalModel {
    let options = LoadOptions {
        max_context: 2048,
        reuse_prefix: false,
        prefill_chunk: 1,
        ..LoadOptions::default()
    };
    LocalModel::load(&ModelSpec::Local(model), &options).expect("load")
}

pub fn gemma_from_scratch() -> &'static LocalModel {
    static MODEL: OnceLock<LocalModel> = OnceLock::new();
    MODEL.get_or_init(|| load_from_scratch(KnownModel::Gemma3_270m))
}

pub fn smollm_from_scratch() -> &'static LocalModel {
    static MODEL: OnceLock<LocalModel> = OnceLock::new();
    MODEL.get_or_init(|| load_from_scratch(KnownModel::SmolLm2_135m))
}

/// How far two computations of the same logits row on *different CPUs* may differ (a greedy
/// id pinned on one machine and decoded on another, a server's logprobs against the local
/// model's): at most this fraction of the row's largest |logit|, for every logit. One int8
/// level of a layer's input: 1/127. (On one machine, two computations of a row agree bit for
/// bit however the prompt is split: see [`assert_identical_logits`].)
///
/// Why CPUs differ. Every linear layer rounds its input to int8 (blocks of 32 values, step
/// s = max|x| / 127, x -> round(x / s)) and the kernels differ by CPU (AVX-512 VNNI, AVX2,
/// portable; `SPAE_KERNEL`) in the order they sum a row's f32 block terms: outputs differ by
/// a few ulps. An input within that roundoff of a rounding boundary lands on the
/// neighbouring level, a whole step away, which moves the layer's output by s * w_ji.
///
/// Why 1/127. A level change costs one step of a block, 1/127 of that block's largest input,
/// times a weight: the natural unit is one int8 level of the row scale, 1/127 ~ 7.9e-3. For
/// the output head alone, simulated on these tests' hidden states with the real head weights
/// (both heads are Q8_0), with Gaussian noise of 16 ulps of max|h|: rows with one level change
/// moved by at most 4.6e-3 of the row scale; at 160 ulps (several changes per row) by at most
/// 5.5e-3. The pinned greedy ids hold under this bound with all three kernels.
///
/// Power: the check must catch real errors (a stale or misplaced key or value, a wrong window
/// or position), which move logits by a sizeable part of their scale. Measured: neighbouring
/// positions differ by >= 0.45 of the row scale (57x; `assert_distinct_logits` asserts > 10x);
/// dropping one early prompt token moves the last row by 7.1e-2 (9x).
pub const LOGIT_TOL: f32 = 1.0 / 127.0;

/// Largest |x| of a row.
pub fn abs_max(row: &[f32]) -> f32 {
    row.iter().fold(0f32, |m, x| m.max(x.abs()))
}

/// Largest |a - b| relative to the larger of the two rows' largest |logit|.
pub fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = abs_max(a).max(abs_max(b)).max(f32::MIN_POSITIVE);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// The most any one logit of `row` may move between two computations: [`LOGIT_TOL`] of the
/// row's scale.
pub fn logit_bound(row: &[f32]) -> f32 {
    LOGIT_TOL * abs_max(row)
}

/// Index of the largest value and its margin over the runner-up.
pub fn top_and_margin(row: &[f32]) -> (usize, f32) {
    let (mut best, mut top, mut second) = (0, f32::NEG_INFINITY, f32::NEG_INFINITY);
    for (i, &x) in row.iter().enumerate() {
        if x > top {
            (best, second, top) = (i, top, x);
        } else if x > second {
            second = x;
        }
    }
    (best, top - second)
}

/// `a` and `b` are the same logits row computed on one machine, bit for bit. Every step of
/// the local forward pass computes a position's values from that position's own inputs (int8
/// layers quantize each row alone; attention visits a query's keys in increasing position
/// order; norms and activations act per row or per element), with the same operations in the
/// same order whichever forward call, chunk or cached prefix the position comes in. Equal
/// operations on equal inputs give equal bits on any IEEE-754 machine, so the tolerance is 0,
/// and any difference is a bug (a stale or misplaced cache entry, a wrong window).
pub fn assert_identical_logits(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: row lengths");
    if let Some(i) = a
        .iter()
        .zip(b)
        .position(|(x, y)| x.to_bits() != y.to_bits())
    {
        panic!(
            "{what}: logit {i} is {} vs {} ({:.3e} of the row scale; {} logits differ)",
            a[i],
            b[i],
            max_rel_diff(a, b),
            a.iter()
                .zip(b)
                .filter(|(x, y)| x.to_bits() != y.to_bits())
                .count()
        );
    }
}

/// Negative control for [`LOGIT_TOL`]: two rows that must not agree (the logits of
/// neighbouring positions, which a cache holding the wrong positions would give) are more
/// than 10 bounds apart, so the bound is far from what a cache bug does.
pub fn assert_distinct_logits(a: &[f32], b: &[f32], what: &str) -> f32 {
    let d = max_rel_diff(a, b);
    assert!(
        d > 10.0 * LOGIT_TOL,
        "{what}: rows that should differ are only {d:.3e} of the row scale apart \
         (10 x the bound is {:.3e}): the bound cannot tell them apart",
        10.0 * LOGIT_TOL
    );
    d
}

/// Bound on |x - y| for two sums of the log-probabilities of the same tokens, one term per row
/// of `rows` (the logits that predict each token), computed in two ways whose logits agree to
/// [`logit_bound`]. A log-probability is logit_j - log(sum_k exp(logit_k)); when every logit
/// moves by at most b, log-sum-exp moves by at most b too, so each term moves by at most 2b.
/// Summing the n terms (in f32 on one side, f64 on the other) adds at most n * 2^-24 * sum
/// |term| (`logprobs`: one side's terms; a rounding-sized correction, negligible next to 2b).
pub fn logprob_sum_bound(rows: &[Vec<f32>], logprobs: &[f32]) -> f32 {
    assert_eq!(rows.len(), logprobs.len());
    let n = rows.len() as f32;
    let sum_abs: f32 = logprobs.iter().map(|x| x.abs()).sum();
    rows.iter().map(|r| 2.0 * logit_bound(r)).sum::<f32>() + n * f32::EPSILON / 2.0 * sum_abs
}

/// Greedy decoding of `prompt` gave `got` where `expected` was recorded (on another machine,
/// or with the cache in another state). Greedy ids are only determined up to the logit bound:
/// where the top two logits are within 2 bounds of each other (a near-tie), roundoff may pick
/// either. So the ids must be equal up to the first difference, and there the two tokens must
/// be such a near-tie in this model's own logits after the common prefix (each of the three
/// computations is within one bound of the others: `expected` won in one, `got` in another).
/// Nothing after a legitimate near-tie can be compared. Returns the step of an accepted
/// near-tie, if any.
pub fn assert_greedy_ids(
    model: &LocalModel,
    prompt: &[u32],
    expected: &[u32],
    got: &[u32],
    what: &str,
) -> Option<usize> {
    let Some(step) = expected.iter().zip(got).position(|(a, b)| a != b) else {
        assert_eq!(got.len(), expected.len(), "{what}: {got:?} vs {expected:?}");
        return None;
    };
    let mut ids = prompt.to_vec();
    ids.extend_from_slice(&expected[..step]);
    let row = &model.logits(&ids, ids.len() - 1).expect("logits")[0];
    let (want, have) = (row[expected[step] as usize], row[got[step] as usize]);
    let bound = logit_bound(row);
    let text = |ids: &[u32]| model.detokenize(ids).unwrap_or_default();
    assert!(
        (want - have).abs() <= 2.0 * bound,
        "{what}: step {step} gave {:?} ({have}) where {:?} ({want}) was pinned, not a near-tie \
         (2 x bound = {}); got {got:?}, expected {expected:?}",
        text(&got[step..=step]),
        text(&expected[step..=step]),
        2.0 * bound
    );
    eprintln!(
        "{what}: near-tie at step {step} ({:?} vs {:?}, {} apart, 2 x bound {}) went the other \
         way; the rest is not compared",
        text(&got[step..=step]),
        text(&expected[step..=step]),
        (want - have).abs(),
        2.0 * bound
    );
    Some(step)
}
