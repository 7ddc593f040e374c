//! x86-64 kernels: AVX-512 VNNI and AVX2. Each computes a tile of R weight rows by C tokens,
//! one accumulator per (row, token) whose operations do not depend on the tile's shape, so a
//! token's outputs are the same bits whichever tile (or call) it lands in.

use std::arch::x86_64::*;

use super::{Blocks, QuantMatrix, BLOCK};

/// Cover weight rows `r0..r1` by every token of `x`: tiles of 4 x `C`, then single rows and
/// tokens for what is left.
macro_rules! drive {
    ($tile:ident, $c:literal, $w:expr, $x:expr, $r0:expr, $r1:expr, $out:expr, $stride:expr) => {{
        let (w, x, out, stride) = ($w, $x, $out, $stride);
        let mut r = $r0;
        while r < $r1 {
            let nr = ($r1 - r).min(4);
            let mut j = 0;
            while j < x.rows {
                let nj = (x.rows - j).min($c);
                match (nr, nj) {
                    (4, $c) => $tile::<4, $c>(w, x, r, j, out, stride),
                    (4, _) => {
                        for jj in j..j + nj {
                            $tile::<4, 1>(w, x, r, jj, out, stride)
                        }
                    }
                    (_, $c) => {
                        for rr in r..r + nr {
                            $tile::<1, $c>(w, x, rr, j, out, stride)
                        }
                    }
                    _ => {
                        for rr in r..r + nr {
                            for jj in j..j + nj {
                                $tile::<1, 1>(w, x, rr, jj, out, stride)
                            }
                        }
                    }
                }
                j += nj;
            }
            r += nr;
        }
    }};
}

/// # Safety
/// The CPU has AVX-512 F, BW and VNNI; `out` holds `x.rows * stride` f32 with `stride >= r1`.
pub(super) unsafe fn avx512vnni(
    w: &QuantMatrix,
    x: &Blocks,
    r0: usize,
    r1: usize,
    out: *mut f32,
    stride: usize,
) {
    drive!(tile512, 3, w, x, r0, r1, out, stride)
}

/// # Safety
/// The CPU has AVX2 and FMA; `out` holds `x.rows * stride` f32 with `stride >= r1`.
pub(super) unsafe fn avx2(
    w: &QuantMatrix,
    x: &Blocks,
    r0: usize,
    r1: usize,
    out: *mut f32,
    stride: usize,
) {
    drive!(tile256, 2, w, x, r0, r1, out, stride)
}

/// Two blocks' scales as one vector: lanes 0-7 the first, 8-15 the second (the lanes of
/// `vpdpbusd` that sum those blocks' bytes).
#[inline(always)]
unsafe fn pair_scales(p: *const f32, idx: __m512i) -> __m512 {
    let two = _mm_castsi128_ps(_mm_loadl_epi64(p as *const __m128i));
    _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(two))
}

/// Two blocks at a time. `vpdpbusd` multiplies unsigned by signed bytes, exactly, into i32
/// lanes of 4 products each: it gets w + 128 (unsigned) and x, and each lane starts at -128
/// times the sum of its 4 x values (one `vpdpbusd` per x vector, shared by the tile's rows),
/// so it ends at an exact part of one block's x . w; then converted and scaled by both
/// blocks' scales. (Subtracting 128 * sum(x) per block after scaling instead would leave
/// lanes of +-2^15 that cancel only in f32, costing digits.)
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile512<const R: usize, const C: usize>(
    w: &QuantMatrix,
    x: &Blocks,
    r: usize,
    j: usize,
    out: *mut f32,
    stride: usize,
) {
    let pairs = x.blocks / 2;
    let zero = _mm512_setzero_si512();
    let flip = _mm512_set1_epi8(i8::MIN);
    let idx = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    let wq: [*const i8; R] = std::array::from_fn(|i| w.w.row_qs(r + i).as_ptr());
    let ws: [*const f32; R] = std::array::from_fn(|i| w.w.row_scales(r + i).as_ptr());
    let xq: [*const i8; C] = std::array::from_fn(|c| x.row_qs(j + c).as_ptr());
    let xs: [*const f32; C] = std::array::from_fn(|c| x.row_scales(j + c).as_ptr());
    let mut acc = [[_mm512_setzero_ps(); C]; R];
    for p in 0..pairs {
        let mut xv = [zero; C];
        let mut start = [zero; C];
        let mut dx = [_mm512_setzero_ps(); C];
        for c in 0..C {
            xv[c] = _mm512_loadu_si512(xq[c].add(p * 2 * BLOCK) as *const __m512i);
            // flip = 0x80 read as unsigned: 128 * (sum of each lane's 4 x values).
            start[c] = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, flip, xv[c]));
            dx[c] = pair_scales(xs[c].add(2 * p), idx);
        }
        for i in 0..R {
            let wv = _mm512_loadu_si512(wq[i].add(p * 2 * BLOCK) as *const __m512i);
            let wu = _mm512_xor_si512(wv, flip);
            let dw = pair_scales(ws[i].add(2 * p), idx);
            for c in 0..C {
                let dot = _mm512_dpbusd_epi32(start[c], wu, xv[c]);
                let scale = _mm512_mul_ps(dw, dx[c]);
                acc[i][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, acc[i][c]);
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        for (c, a) in row.iter().enumerate() {
            *out.add((j + c) * stride + r + i) = _mm512_reduce_add_ps(*a);
        }
    }
}

/// One block at a time: `vpmaddubsw` multiplies unsigned by signed bytes, so it gets |w| and x
/// with w's sign (|w| <= 128 and |x| <= 127 keep each pair's sum within i16), then
/// `vpmaddwd` sums pairs to i32: exact; converted and scaled as above.
#[target_feature(enable = "avx2,fma")]
unsafe fn tile256<const R: usize, const C: usize>(
    w: &QuantMatrix,
    x: &Blocks,
    r: usize,
    j: usize,
    out: *mut f32,
    stride: usize,
) {
    let ones = _mm256_set1_epi16(1);
    let wq: [*const i8; R] = std::array::from_fn(|i| w.w.row_qs(r + i).as_ptr());
    let ws: [*const f32; R] = std::array::from_fn(|i| w.w.row_scales(r + i).as_ptr());
    let xq: [*const i8; C] = std::array::from_fn(|c| x.row_qs(j + c).as_ptr());
    let xs: [*const f32; C] = std::array::from_fn(|c| x.row_scales(j + c).as_ptr());
    let mut acc = [[_mm256_setzero_ps(); C]; R];
    for b in 0..x.blocks {
        let mut xv = [_mm256_setzero_si256(); C];
        let mut dx = [_mm256_setzero_ps(); C];
        for c in 0..C {
            xv[c] = _mm256_loadu_si256(xq[c].add(b * BLOCK) as *const __m256i);
            dx[c] = _mm256_set1_ps(*xs[c].add(b));
        }
        for i in 0..R {
            let wv = _mm256_loadu_si256(wq[i].add(b * BLOCK) as *const __m256i);
            let aw = _mm256_abs_epi8(wv);
            let dw = _mm256_set1_ps(*ws[i].add(b));
            for c in 0..C {
                let sx = _mm256_sign_epi8(xv[c], wv);
                let dot = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sx), ones);
                let scale = _mm256_mul_ps(dw, dx[c]);
                acc[i][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, acc[i][c]);
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        for (c, a) in row.iter().enumerate() {
            *out.add((j + c) * stride + r + i) = hsum256(*a);
        }
    }
}

#[inline(always)]
unsafe fn hsum256(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}
