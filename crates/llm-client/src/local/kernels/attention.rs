//! Causal grouped-query attention, computed query by query in an order fixed by absolute
//! positions: a query's output is the same bits whether its prompt runs in one forward call,
//! in chunks, or after a reused cache. (candle's batched matmul tiles by the number of
//! queries, so its roundoff changed with the split; the int8 layers downstream can turn that
//! roundoff into a whole quantization level.) Sliding-window layers visit only the window's
//! keys instead of masking the rest.
//!
//! Per query: scores q . k for keys `lo..=pos` in increasing order, softmax (max, then
//! exp(s - max) with the kernels' vectorizable exp, summed in increasing order), then the
//! probability-weighted sum of values in increasing key order, divided by the sum at the end.
//! Queries are grouped in tiles that read each key and value row once for the whole tile, and
//! their scores against one key are taken several at a time; neither changes a query's
//! arithmetic. There is no fused multiply-add (Rust does not contract `a * b + c`), and lane l
//! of every dot product holds the same elements on any x86-64, so the bits do not depend on
//! the vector width the CPU has either.

use rayon::prelude::*;

use super::SharedOut;

/// Queries per task: each key and value row is read once per tile.
const TILE: usize = 16;

/// Independent partial sums of a dot product (lane l takes elements l, l + 16, ...).
const LANES: usize = 16;

/// One kv head's keys and values inside position-major buffers.
struct KvRows<'a> {
    k: &'a [f32],
    v: &'a [f32],
    /// Values from one position to the next.
    stride: usize,
}

impl KvRows<'_> {
    fn key(&self, pos: usize, d: usize) -> &[f32] {
        &self.k[pos * self.stride..pos * self.stride + d]
    }

    fn value(&self, pos: usize, d: usize) -> &[f32] {
        &self.v[pos * self.stride..pos * self.stride + d]
    }
}

/// How the new positions of one forward call continue the cached ones: the first `root` as one
/// sequence, then `branches` (their lengths, laid out one after another), each continuing the
/// root on its own and seeing no other branch: the tree of several continuations of one prompt
/// (the candidates a `score` call compares), run in one call. A branch's positions compute what
/// they would after the root alone: the same keys, visited in the same order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Span {
    pub root: usize,
    pub branches: Vec<usize>,
}

impl Span {
    /// `t` positions of one sequence.
    pub fn sequence(t: usize) -> Self {
        Self {
            root: t,
            branches: Vec::new(),
        }
    }

    /// New positions in the call.
    pub fn len(&self) -> usize {
        self.root + self.branches.iter().sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Each new position's query after `offset` cached positions, in the call's order.
    pub fn queries(&self, offset: usize) -> Vec<Query> {
        let mut out: Vec<Query> = (0..self.root)
            .map(|i| Query {
                at: offset + i,
                pos: offset + i,
                shared: 0,
                start: 0,
            })
            .collect();
        let shared = offset + self.root;
        let mut start = shared;
        for &len in &self.branches {
            out.extend((0..len).map(|i| Query {
                at: start + i,
                pos: shared + i,
                shared,
                start,
            }));
            start += len;
        }
        out
    }

    /// The new positions' places in their sequences (RoPE's positions).
    pub fn positions(&self, offset: usize) -> Vec<usize> {
        self.queries(offset).iter().map(|q| q.pos).collect()
    }
}

/// One new position: where its key and value sit in the cache (`at`), its place in its
/// sequence (`pos`), and the cached keys it sees: `0..shared`, then its own run `start..=at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query {
    pub at: usize,
    pub pos: usize,
    pub shared: usize,
    pub start: usize,
}

/// `softmax(q k^T + causal mask) v` for queries at positions `offset..offset + t`.
#[derive(Debug, Clone, Copy)]
pub struct CausalAttention {
    /// Position of the first query; keys `0..offset + t` are in `k` and `v`.
    pub offset: usize,
    /// Sliding window: a query sees the last `window` positions, itself included.
    pub window: Option<usize>,
}

impl CausalAttention {
    /// `q` `(heads, t, d)` (already scaled), `k` and `v` `(total, kv_heads, d)`
    /// (position-major, as the KV cache holds them), all row-major; returns `(t, heads * d)`.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &self,
        q: &[f32],
        heads: usize,
        t: usize,
        d: usize,
        k: &[f32],
        v: &[f32],
        kv_heads: usize,
        total: usize,
    ) -> Vec<f32> {
        self.run_span(&Span::sequence(t), q, heads, d, k, v, kv_heads, total)
    }

    /// [`Self::run`] for the new positions of `span` (`t = span.len()` queries).
    #[allow(clippy::too_many_arguments)]
    pub fn run_span(
        &self,
        span: &Span,
        q: &[f32],
        heads: usize,
        d: usize,
        k: &[f32],
        v: &[f32],
        kv_heads: usize,
        total: usize,
    ) -> Vec<f32> {
        let t = span.len();
        let queries = span.queries(self.offset);
        let mut out = vec![0f32; t * heads * d];
        let rep = heads / kv_heads.max(1);
        let tiles = t.div_ceil(TILE);
        let out_ptr = SharedOut(out.as_mut_ptr());
        let run = |task: usize| {
            let (h, tile) = (task / tiles, task % tiles);
            let i0 = tile * TILE;
            let i1 = (i0 + TILE).min(t);
            let g = h / rep;
            // Head g's rows start at g * d, one position every kv_heads * d values.
            let heads_k = KvRows {
                k: &k[g * d..],
                v: &v[g * d..],
                stride: kv_heads * d,
            };
            let qh = &q[h * t * d..(h + 1) * t * d];
            let rows = self.tile_dispatch(qh, &queries, i0, i1, d, &heads_k);
            debug_assert_eq!(total * kv_heads * d, k.len());
            for (n, row) in rows.chunks_exact(d).enumerate() {
                let at = (i0 + n) * heads * d + h * d;
                // SAFETY: task (h, tile) writes only rows i0..i1 of head h, disjoint across
                // tasks, and `out` outlives the loop.
                unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), out_ptr.ptr().add(at), d) };
            }
        };
        (0..heads * tiles).into_par_iter().for_each(run);
        out
    }

    /// The cached keys query `q` sees, as two ranges in increasing order (either may be empty):
    /// those of the shared prefix, then those of its own run, clipped to the window by
    /// position in the sequence.
    fn keys(&self, q: &Query) -> [(usize, usize); 2] {
        let lo = self.window.map_or(0, |w| (q.pos + 1).saturating_sub(w));
        [
            (lo.min(q.shared), q.shared),
            (q.start + lo.saturating_sub(q.shared), q.at + 1),
        ]
    }

    /// [`Self::tile`] with the dot product of the widest vectors this CPU has
    /// (`Isa::detect`). All three give the same bits: lane l of a dot product sums the same
    /// elements in the same order, the lanes are summed in the same tree, and there is no
    /// fused multiply-add.
    fn tile_dispatch(
        &self,
        q: &[f32],
        queries: &[Query],
        i0: usize,
        i1: usize,
        d: usize,
        kv: &KvRows,
    ) -> Vec<f32> {
        let keys: Vec<[(usize, usize); 2]> = queries[i0..i1].iter().map(|q| self.keys(q)).collect();
        #[cfg(target_arch = "x86_64")]
        match super::Isa::detect() {
            // SAFETY: `Isa::detect` reports only features this CPU has.
            super::Isa::Avx512Vnni | super::Isa::Amx => {
                return unsafe { Self::tile_avx512(q, &keys, i0, d, kv) }
            }
            super::Isa::Avx2 => return unsafe { Self::tile_avx2(q, &keys, i0, d, kv) },
            super::Isa::Portable => {}
        }
        Self::tile(q, &keys, i0, d, kv, dots)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn tile_avx512(
        q: &[f32],
        keys: &[[(usize, usize); 2]],
        i0: usize,
        d: usize,
        kv: &KvRows,
    ) -> Vec<f32> {
        Self::tile(q, keys, i0, d, kv, |qs, d, k, out| unsafe {
            x86::dots_avx512(qs, d, k, out)
        })
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn tile_avx2(
        q: &[f32],
        keys: &[[(usize, usize); 2]],
        i0: usize,
        d: usize,
        kv: &KvRows,
    ) -> Vec<f32> {
        Self::tile(q, keys, i0, d, kv, |qs, d, k, out| unsafe {
            x86::dots_avx2(qs, d, k, out)
        })
    }

    /// Outputs `(n, d)` of the `n = keys.len()` queries from `i0` of one head; query m sees
    /// the keys of `keys[m]`.
    #[inline(always)]
    fn tile(
        q: &[f32],
        keys: &[[(usize, usize); 2]],
        i0: usize,
        d: usize,
        kv: &KvRows,
        dots: impl Fn(&[f32], usize, &[f32], &mut [f32]),
    ) -> Vec<f32> {
        let sees = |m: usize, key: usize| keys[m].iter().any(|r| (r.0..r.1).contains(&key));
        let spans = keys.iter().flatten().filter(|r| r.0 < r.1);
        let first = spans.clone().map(|r| r.0).min().unwrap_or(0);
        let last = spans.map(|r| r.1).max().unwrap_or(0);
        let width = last - first;
        let n = keys.len();
        // Scores, then probabilities, of query m for key first + j at [m * width + j].
        let mut p = vec![0f32; n * width];
        let mut scores = vec![0f32; n];
        for key in first..last {
            let krow = kv.key(key, d);
            // Runs of consecutive queries that see this key, scored together.
            let mut m = 0;
            while m < n {
                if !sees(m, key) {
                    m += 1;
                    continue;
                }
                let a = m;
                while m < n && sees(m, key) {
                    m += 1;
                }
                dots(
                    &q[(i0 + a) * d..(i0 + m) * d],
                    d,
                    krow,
                    &mut scores[..m - a],
                );
                for (j, &s) in (a..m).zip(&scores) {
                    p[j * width + key - first] = s;
                }
            }
        }
        let mut inv = vec![0f32; n];
        for (m, ranges) in keys.iter().enumerate() {
            let row = &mut p[m * width..(m + 1) * width];
            let seen: Vec<std::ops::Range<usize>> = ranges
                .iter()
                .filter(|r| r.0 < r.1)
                .map(|r| r.0 - first..r.1 - first)
                .collect();
            let max = seen
                .iter()
                .flat_map(|r| &row[r.clone()])
                .copied()
                .fold(f32::NEG_INFINITY, f32::max);
            // The exps first (a loop the compiler vectorizes), then their sum in key order.
            for r in &seen {
                for s in &mut row[r.clone()] {
                    *s = super::glu::exp(*s - max);
                }
            }
            let sum: f32 = seen.iter().flat_map(|r| &row[r.clone()]).sum();
            inv[m] = 1.0 / sum;
        }
        let mut out = vec![0f32; n * d];
        for key in first..last {
            let vrow = kv.value(key, d);
            for m in 0..n {
                if sees(m, key) {
                    let w = p[m * width + key - first];
                    for (o, &x) in out[m * d..(m + 1) * d].iter_mut().zip(vrow) {
                        *o += w * x;
                    }
                }
            }
        }
        for (m, s) in inv.iter().enumerate() {
            for o in &mut out[m * d..(m + 1) * d] {
                *o *= s;
            }
        }
        out
    }
}

/// `out[m] = qs[m] . k` for consecutive rows `qs[m]` of length `d`.
fn dots(qs: &[f32], d: usize, k: &[f32], out: &mut [f32]) {
    for (o, q) in out.iter_mut().zip(qs.chunks_exact(d)) {
        *o = dot(q, k);
    }
}

/// a . b with `LANES` partial sums summed pairwise at the end: the same order for any input
/// of this length, and vectorized by the compiler at whatever width the target has.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let n = a.len().min(b.len());
    let whole = n / LANES * LANES;
    for (x, y) in a[..whole]
        .chunks_exact(LANES)
        .zip(b[..whole].chunks_exact(LANES))
    {
        // Fixed-size views let the compiler keep `acc` in one register set.
        let (x, y): (&[f32; LANES], &[f32; LANES]) = match (x.try_into(), y.try_into()) {
            (Ok(x), Ok(y)) => (x, y),
            _ => unreachable!("chunks_exact yields LANES elements"),
        };
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    for (l, (x, y)) in a[whole..n].iter().zip(&b[whole..n]).enumerate() {
        acc[l] += x * y;
    }
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for l in 0..width {
            acc[l] += acc[l + width];
        }
    }
    acc[0]
}

/// The dot product of [`dot`] in AVX-512 and AVX2 registers: lanes 0..16 as one zmm or two
/// ymm, multiplied and added in separate instructions (no FMA), summed in `dot`'s tree. Falls
/// back to `dot` when the length is not a multiple of 16.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::LANES;

    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) unsafe fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        if !n.is_multiple_of(LANES) {
            return super::dot(a, b);
        }
        let mut acc = _mm512_setzero_ps();
        for c in 0..n / LANES {
            let x = _mm512_loadu_ps(a.as_ptr().add(c * LANES));
            let y = _mm512_loadu_ps(b.as_ptr().add(c * LANES));
            acc = _mm512_add_ps(acc, _mm512_mul_ps(x, y));
        }
        reduce16(acc)
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        if !n.is_multiple_of(LANES) {
            return super::dot(a, b);
        }
        let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for c in 0..n / LANES {
            let p = a.as_ptr().add(c * LANES);
            let r = b.as_ptr().add(c * LANES);
            lo = _mm256_add_ps(lo, _mm256_mul_ps(_mm256_loadu_ps(p), _mm256_loadu_ps(r)));
            hi = _mm256_add_ps(
                hi,
                _mm256_mul_ps(_mm256_loadu_ps(p.add(8)), _mm256_loadu_ps(r.add(8))),
            );
        }
        tree8(_mm256_add_ps(lo, hi))
    }

    /// [`dot_avx512`] for consecutive rows of `qs`, four at a time: four independent
    /// accumulators hide the add latency that one dot product's chain waits on, and each
    /// accumulator does exactly what `dot_avx512` does.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) unsafe fn dots_avx512(qs: &[f32], d: usize, k: &[f32], out: &mut [f32]) {
        let n = out.len();
        if !d.is_multiple_of(LANES) || k.len() < d || qs.len() < n * d {
            return super::dots(qs, d, k, out);
        }
        let mut m = 0;
        while m + 4 <= n {
            let q = qs.as_ptr().add(m * d);
            let mut acc = [_mm512_setzero_ps(); 4];
            for c in 0..d / LANES {
                let y = _mm512_loadu_ps(k.as_ptr().add(c * LANES));
                for (j, a) in acc.iter_mut().enumerate() {
                    let x = _mm512_loadu_ps(q.add(j * d + c * LANES));
                    *a = _mm512_add_ps(*a, _mm512_mul_ps(x, y));
                }
            }
            for (j, a) in acc.iter().enumerate() {
                out[m + j] = reduce16(*a);
            }
            m += 4;
        }
        for j in m..n {
            out[j] = dot_avx512(&qs[j * d..(j + 1) * d], k);
        }
    }

    /// [`dot_avx2`] for consecutive rows of `qs`, two at a time (four ymm accumulators).
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) unsafe fn dots_avx2(qs: &[f32], d: usize, k: &[f32], out: &mut [f32]) {
        let n = out.len();
        if !d.is_multiple_of(LANES) || k.len() < d || qs.len() < n * d {
            return super::dots(qs, d, k, out);
        }
        let mut m = 0;
        while m + 2 <= n {
            let q = qs.as_ptr().add(m * d);
            let mut lo = [_mm256_setzero_ps(); 2];
            let mut hi = [_mm256_setzero_ps(); 2];
            for c in 0..d / LANES {
                let r = k.as_ptr().add(c * LANES);
                let (y0, y1) = (_mm256_loadu_ps(r), _mm256_loadu_ps(r.add(8)));
                for j in 0..2 {
                    let p = q.add(j * d + c * LANES);
                    lo[j] = _mm256_add_ps(lo[j], _mm256_mul_ps(_mm256_loadu_ps(p), y0));
                    hi[j] = _mm256_add_ps(hi[j], _mm256_mul_ps(_mm256_loadu_ps(p.add(8)), y1));
                }
            }
            for j in 0..2 {
                out[m + j] = tree8(_mm256_add_ps(lo[j], hi[j]));
            }
            m += 2;
        }
        for j in m..n {
            out[j] = dot_avx2(&qs[j * d..(j + 1) * d], k);
        }
    }

    /// `dot`'s tree over one zmm: acc[l] + acc[l + 8], then + 4, + 2, + 1.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn reduce16(acc: __m512) -> f32 {
        let s8 = _mm256_add_ps(
            _mm512_castps512_ps256(acc),
            _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc), 1)),
        );
        tree8(s8)
    }

    /// s[l] + s[l + 4], then + 2, then + 1.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn tree8(s8: __m256) -> f32 {
        let s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
        let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
        let s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
        _mm_cvtss_f32(s1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n as u32)
            .map(|i| {
                ((i.wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / 8388608.0) - 1.0
            })
            .collect()
    }

    /// Plain f64 attention with an explicit mask.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        q: &[f32],
        heads: usize,
        t: usize,
        d: usize,
        k: &[f32],
        v: &[f32],
        kv_heads: usize,
        offset: usize,
        window: Option<usize>,
    ) -> Vec<f64> {
        let total = offset + t;
        let rep = heads / kv_heads;
        let mut out = vec![0f64; t * heads * d];
        for h in 0..heads {
            let g = h / rep;
            for i in 0..t {
                let pos = offset + i;
                let visible: Vec<usize> = (0..total)
                    .filter(|&key| key <= pos && window.is_none_or(|w| pos < key + w))
                    .collect();
                let s: Vec<f64> = visible
                    .iter()
                    .map(|&key| {
                        (0..d)
                            .map(|e| {
                                q[(h * t + i) * d + e] as f64
                                    * k[(key * kv_heads + g) * d + e] as f64
                            })
                            .sum()
                    })
                    .collect();
                let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = s.iter().map(|x| (x - max).exp()).sum();
                for (n, &key) in visible.iter().enumerate() {
                    let p = (s[n] - max).exp() / z;
                    for e in 0..d {
                        out[i * heads * d + h * d + e] +=
                            p * v[(key * kv_heads + g) * d + e] as f64;
                    }
                }
            }
        }
        out
    }

    /// Against f64 with a mask. Each output is a convex combination of values (|v| <= 1 here),
    /// so its error is bounded by the probabilities' relative error times max |v| plus the
    /// sum's rounding: scores carry d * 2^-24 * sum |q_e k_e| <= d * 2^-24 * d (|q|, |k| <=
    /// 1), which moves each probability by at most twice that relatively; summing n terms
    /// adds n * 2^-24. With d = 64 and n <= 40: < 2 * 64 * 64 * 6e-8 + 40 * 6e-8 + 2^-24
    /// < 5.3e-4; asserted 1e-3.
    #[test]
    fn matches_masked_attention_in_f64() {
        let (heads, kv_heads, d) = (4, 2, 64);
        for &(t, offset, window) in &[
            (7, 0, None),
            (5, 30, None),
            (9, 31, Some(8)),
            (1, 39, Some(16)),
        ] {
            let total = offset + t;
            let q = data(heads * t * d, 1);
            let k = data(kv_heads * total * d, 2);
            let v = data(kv_heads * total * d, 3);
            let got =
                CausalAttention { offset, window }.run(&q, heads, t, d, &k, &v, kv_heads, total);
            let want = reference(&q, heads, t, d, &k, &v, kv_heads, offset, window);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (*g as f64 - w).abs() < 1e-3,
                    "t={t} offset={offset} {window:?} [{i}]: {g} vs {w}"
                );
            }
        }
    }

    /// The vector dot products give the portable one's bits (d = 256: Gemma 3's head size).
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn vector_dots_give_the_portable_bits() {
        let (a, b) = (data(256, 7), data(256, 8));
        let want = dot(&a, &b).to_bits();
        if is_x86_feature_detected!("avx2") {
            assert_eq!(unsafe { x86::dot_avx2(&a, &b) }.to_bits(), want);
        }
        if is_x86_feature_detected!("avx512f") {
            assert_eq!(unsafe { x86::dot_avx512(&a, &b) }.to_bits(), want);
        }
        // Several rows at once (groups and leftovers) give each row's single-dot bits.
        let qs = data(7 * 256, 9);
        let want: Vec<u32> = qs.chunks_exact(256).map(|q| dot(q, &b).to_bits()).collect();
        let mut out = vec![0f32; 7];
        if is_x86_feature_detected!("avx2") {
            unsafe { x86::dots_avx2(&qs, 256, &b, &mut out) };
            assert_eq!(out.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want);
        }
        if is_x86_feature_detected!("avx512f") {
            unsafe { x86::dots_avx512(&qs, 256, &b, &mut out) };
            assert_eq!(out.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want);
        }
    }

    /// The prefix cache's requirement: a prompt's last rows are the same bits when computed
    /// after a cached prefix as in one pass.
    #[test]
    fn a_query_gives_the_same_bits_in_any_split() {
        let (heads, kv_heads, d, total) = (4, 1, 48, 37);
        let q = data(heads * total * d, 4);
        let k = data(kv_heads * total * d, 5);
        let v = data(kv_heads * total * d, 6);
        for window in [None, Some(10)] {
            let all = CausalAttention { offset: 0, window }
                .run(&q, heads, total, d, &k, &v, kv_heads, total);
            for offset in [1, 16, 20, 36] {
                let t = total - offset;
                // Rows offset.. of each head's queries.
                let mut qs = Vec::new();
                for h in 0..heads {
                    qs.extend_from_slice(&q[(h * total + offset) * d..(h + 1) * total * d]);
                }
                let part = CausalAttention { offset, window }
                    .run(&qs, heads, t, d, &k, &v, kv_heads, total);
                assert_eq!(
                    part,
                    all[offset * heads * d..],
                    "offset {offset} {window:?}"
                );
            }
        }
    }

    /// Branches of a span: each branch query gives the bits of the same query run as one
    /// sequence of the root followed by its branch alone (with and without a window that
    /// reaches back into the shared prefix).
    #[test]
    fn a_branch_gives_the_bits_of_its_sequence_alone() {
        let (heads, kv_heads, d) = (2, 1, 32);
        let (offset, root, branches) = (20, 3, vec![4, 0, 1, 5]);
        let span = Span {
            root,
            branches: branches.clone(),
        };
        let t = span.len();
        let total = offset + t;
        let q = data(heads * t * d, 11);
        let k = data(kv_heads * total * d, 12);
        let v = data(kv_heads * total * d, 13);
        for window in [None, Some(6), Some(25)] {
            let got = CausalAttention { offset, window }
                .run_span(&span, &q, heads, d, &k, &v, kv_heads, total);
            let shared = offset + root;
            let mut start = shared;
            for &len in &branches {
                // The sequence: keys and values of the prefix and root, then this branch's.
                let mut ks = k[..shared * kv_heads * d].to_vec();
                let mut vs = v[..shared * kv_heads * d].to_vec();
                ks.extend_from_slice(&k[start * kv_heads * d..(start + len) * kv_heads * d]);
                vs.extend_from_slice(&v[start * kv_heads * d..(start + len) * kv_heads * d]);
                let mut qs = Vec::new();
                for h in 0..heads {
                    let from = h * t + start - offset;
                    qs.extend_from_slice(&q[from * d..(from + len) * d]);
                }
                let alone = CausalAttention {
                    offset: shared,
                    window,
                }
                .run(&qs, heads, len, d, &ks, &vs, kv_heads, shared + len);
                for i in 0..len {
                    let row = start - offset + i;
                    assert_eq!(
                        got[row * heads * d..(row + 1) * heads * d],
                        alone[i * heads * d..(i + 1) * heads * d],
                        "{window:?}, branch from {start}, query {i}"
                    );
                }
                start += len;
            }
            // The root is an ordinary sequence.
            let mut qs = Vec::new();
            for h in 0..heads {
                qs.extend_from_slice(&q[h * t * d..(h * t + root) * d]);
            }
            let alone = CausalAttention { offset, window }.run(
                &qs,
                heads,
                root,
                d,
                &k[..shared * kv_heads * d],
                &v[..shared * kv_heads * d],
                kv_heads,
                shared,
            );
            assert_eq!(got[..root * heads * d], alone[..], "{window:?}, root");
        }
    }
}
