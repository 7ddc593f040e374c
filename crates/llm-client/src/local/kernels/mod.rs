//! Int8 matrix products for the local models' linear layers, the way llama.cpp runs them on a
//! CPU: weights repacked at load into int8 blocks of 32 values with one f32 scale each (Q8_0's
//! layout), each activation row quantized the same way on the fly, and the dot product of two
//! blocks taken in exact i32 arithmetic before one f32 multiply by the two scales.
//!
//! Why int8 both ways: a decode step reads every weight once, so bytes per weight set its pace
//! (f32 weights read four times what int8 ones do), and a prefill is bound by multiply-adds,
//! of which one AVX-512 VNNI instruction does 64 in int8 against 16 in f32.
//!
//! The kernel is picked once, at run time, from what the CPU has ([`Isa::detect`]): AMX
//! (Intel's int8 tiles, from Sapphire Rapids on), AVX-512 VNNI, AVX2, or portable Rust. Every path computes each output from its own row and token
//! only, with the same operations in the same order however many tokens one call holds: a
//! prompt split into several forward calls gives the bits one call gives, which the prefix
//! cache relies on. Paths differ from each other by f32 rounding only (the block dot products
//! are exact integers on all of them); the tests bound that difference from the arithmetic.

use std::sync::OnceLock;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{CpuStorage, CustomOp1, Layout, Shape};
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
mod amx;
mod attention;
mod glu;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use attention::{CausalAttention, Span};
pub use glu::{GatedActivation, GatedLinearUnit};

/// Values per block, each block with its own scale (as in GGUF's Q8_0).
pub const BLOCK: usize = 32;

/// The widest kernel reads two blocks per 512-bit vector: rows are padded to an even number of
/// blocks (zero values, zero scale) so that it never reads past a row.
const BLOCK_PAIR: usize = 2 * BLOCK;

/// Largest int8 level: values are rounded to -127..=127 times the block's scale (GGUF Q8_0
/// files may hold -128 too; every kernel accepts it in weights).
const LEVELS: f32 = 127.0;

/// Instruction sets the kernels are written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// Plain Rust, any CPU.
    Portable,
    /// x86-64 AVX2 + FMA: `vpmaddubsw` on |w| and x signed like w.
    Avx2,
    /// x86-64 AVX-512 VNNI: `vpdpbusd`, two blocks per instruction.
    Avx512Vnni,
    /// x86-64 AMX int8 (with AVX-512 around it): `tdpbssd`, one block of 16 weight rows by
    /// 16 tokens per instruction.
    Amx,
}

impl Isa {
    /// The fastest kernel this CPU runs, detected once; `SPAE_KERNEL=portable|avx2|avx512vnni|amx`
    /// picks a slower one (to compare paths, or to rule a kernel out).
    pub fn detect() -> Isa {
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| {
            let available = Isa::available();
            let fastest = available.last().copied().unwrap_or(Isa::Portable);
            let Ok(name) = std::env::var("SPAE_KERNEL") else {
                return fastest;
            };
            match available
                .iter()
                .find(|isa| isa.name() == name.to_lowercase())
            {
                Some(&isa) => isa,
                None => {
                    tracing::warn!(
                        "SPAE_KERNEL={name:?} is not one of this CPU's kernels {:?}; using {}",
                        available.iter().map(|i| i.name()).collect::<Vec<_>>(),
                        fastest.name()
                    );
                    fastest
                }
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512Vnni => "avx512vnni",
            Isa::Amx => "amx",
        }
    }

    /// Every kernel this CPU can run, slowest first (the tests check each one).
    pub fn available() -> Vec<Isa> {
        let mut isas = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                isas.push(Isa::Avx2);
            }
            if is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vnni")
            {
                isas.push(Isa::Avx512Vnni);
                if amx::usable() {
                    isas.push(Isa::Amx);
                }
            }
        }
        isas
    }
}

/// Why a matrix could not be repacked.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("{rows}x{cols} matrix from {len} values")]
    Size {
        rows: usize,
        cols: usize,
        len: usize,
    },
    #[error("input of {got} columns to a linear layer of {expected}")]
    Columns { expected: usize, got: usize },
    #[error("{0}")]
    Candle(#[from] candle_core::Error),
}

/// Rows of `cols` values as int8 blocks: row `r`'s block `b` holds `qs[(r * blocks + b) * 32..]`
/// and scale `scales[r * blocks + b]`; value = q * scale.
#[derive(Clone)]
struct Blocks {
    rows: usize,
    cols: usize,
    /// Blocks per row, padded to an even count.
    blocks: usize,
    qs: Vec<i8>,
    scales: Vec<f32>,
}

impl Blocks {
    fn zeros(rows: usize, cols: usize) -> Self {
        let blocks = cols.div_ceil(BLOCK_PAIR) * 2;
        Self {
            rows,
            cols,
            blocks,
            qs: vec![0; rows * blocks * BLOCK],
            scales: vec![0.0; rows * blocks],
        }
    }

    /// Round each block of `rows` (row-major, `cols` wide) to int8 with scale max|x| / 127.
    fn quantize(data: &[f32], rows: usize, cols: usize) -> Self {
        let mut out = Self::zeros(rows, cols);
        let (blocks, qs, scales) = (out.blocks, &mut out.qs, &mut out.scales);
        let quantize_row = |(r, (q_row, s_row)): (usize, (&mut [i8], &mut [f32]))| {
            let row = &data[r * cols..(r + 1) * cols];
            for (b, chunk) in row.chunks(BLOCK).enumerate() {
                let amax = chunk.iter().fold(0f32, |m, x| m.max(x.abs()));
                let scale = amax / LEVELS;
                let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
                s_row[b] = scale;
                for (q, x) in q_row[b * BLOCK..].iter_mut().zip(chunk) {
                    *q = level(x * inv);
                }
            }
        };
        let pairs = qs
            .chunks_mut(blocks * BLOCK)
            .zip(scales.chunks_mut(blocks))
            .enumerate();
        if rows * cols >= 1 << 16 {
            pairs.par_bridge().for_each(quantize_row);
        } else {
            pairs.for_each(quantize_row);
        }
        out
    }

    fn row_qs(&self, r: usize) -> &[i8] {
        &self.qs[r * self.blocks * BLOCK..(r + 1) * self.blocks * BLOCK]
    }

    fn row_scales(&self, r: usize) -> &[f32] {
        &self.scales[r * self.blocks..(r + 1) * self.blocks]
    }
}

/// `y` rounded half away from zero (as `f32::round`) and clamped to +-127 (|y| <= 127 up to
/// the rounding of `x / scale`; the clamp guards that). Written with a truncating conversion
/// instead of `round`, which compiles to a libm call per value on baseline x86-64 and cost a
/// tenth of a prefill: for |y| < 2^23 the fraction `y - trunc(y)` is exact, so this is the
/// same function (`levels_round_as_f32_round` checks it), and the loop vectorizes. NaN maps
/// to 0 either way.
#[inline(always)]
fn level(y: f32) -> i8 {
    let y = y.clamp(-LEVELS, LEVELS);
    let t = y as i32;
    let frac = y - t as f32;
    let r = if frac >= 0.5 {
        t + 1
    } else if frac <= -0.5 {
        t - 1
    } else {
        t
    };
    r as i8
}

/// A linear layer's weight `(out, in)` repacked for the int8 kernels.
#[derive(Clone)]
pub struct QuantMatrix {
    w: Blocks,
}

impl std::fmt::Debug for QuantMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QuantMatrix({}x{}, int8)", self.w.rows, self.w.cols)
    }
}

impl QuantMatrix {
    /// Quantize a dense row-major `(rows, cols)` matrix.
    pub fn from_f32(data: &[f32], rows: usize, cols: usize) -> Result<Self, KernelError> {
        if data.len() != rows * cols {
            return Err(KernelError::Size {
                rows,
                cols,
                len: data.len(),
            });
        }
        Ok(Self::from_blocks(Blocks::quantize(data, rows, cols)))
    }

    /// Repack a GGUF tensor `(rows, cols)`. Q8_0 is copied level for level (its f16 scales are
    /// exact in f32); any other type is dequantized and rounded to int8 blocks, which adds at
    /// most half an int8 level (1/254 of a block's largest weight) to each weight, under the
    /// rounding the 4- to 6-bit types already carry.
    pub fn from_qtensor(t: &QTensor) -> Result<Self, KernelError> {
        let (rows, cols) = t.shape().dims2()?;
        if t.dtype() == GgmlDType::Q8_0 && cols % BLOCK == 0 {
            let data = t.data()?;
            // GGUF Q8_0 block: f16 scale, then 32 int8 values.
            const BYTES: usize = 2 + BLOCK;
            let per_row = cols / BLOCK;
            if data.len() != rows * per_row * BYTES {
                return Err(KernelError::Size {
                    rows,
                    cols,
                    len: data.len() / BYTES * BLOCK,
                });
            }
            let mut w = Blocks::zeros(rows, cols);
            for (r, row) in data.chunks_exact(per_row * BYTES).enumerate() {
                for (b, block) in row.chunks_exact(BYTES).enumerate() {
                    let i = r * w.blocks + b;
                    w.scales[i] = half::f16::from_le_bytes([block[0], block[1]]).to_f32();
                    for (q, &byte) in w.qs[i * BLOCK..(i + 1) * BLOCK].iter_mut().zip(&block[2..]) {
                        *q = byte as i8;
                    }
                }
            }
            return Ok(Self::from_blocks(w));
        }
        let dense = t
            .dequantize(&candle_core::Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Self::from_f32(&dense, rows, cols)
    }

    fn from_blocks(w: Blocks) -> Self {
        Self { w }
    }

    /// The rows of `parts` one after another, as one matrix: one matmul instead of several
    /// over the same input (a feed-forward block's gate and up projections).
    pub fn stack(parts: &[&QuantMatrix]) -> Result<Self, KernelError> {
        let cols = parts.first().map_or(0, |p| p.cols());
        let mut w = Blocks::zeros(0, cols);
        for p in parts {
            if p.cols() != cols {
                return Err(KernelError::Columns {
                    expected: cols,
                    got: p.cols(),
                });
            }
            w.rows += p.w.rows;
            w.qs.extend_from_slice(&p.w.qs);
            w.scales.extend_from_slice(&p.w.scales);
        }
        Ok(Self::from_blocks(w))
    }

    pub fn rows(&self) -> usize {
        self.w.rows
    }

    pub fn cols(&self) -> usize {
        self.w.cols
    }

    /// Row `r` as f32 (q * scale): an embedding lookup from the same bytes as the tied head.
    pub fn row_f32(&self, r: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.w.cols);
        for (block, &scale) in self
            .w
            .row_qs(r)
            .chunks_exact(BLOCK)
            .zip(self.w.row_scales(r))
        {
            out.extend(block.iter().map(|&q| q as f32 * scale));
        }
        out.truncate(self.w.cols);
        out
    }

    /// `x @ self.T` for `x` of `t` rows of `cols()` values, with the kernel of `isa`: `(t,
    /// rows())`, row-major.
    pub fn matmul_with(&self, x: &[f32], t: usize, isa: Isa) -> Result<Vec<f32>, KernelError> {
        let cols = self.w.cols;
        if x.len() != t * cols {
            return Err(KernelError::Columns {
                expected: cols,
                got: x.len() / t.max(1),
            });
        }
        let x = Input::quantize(x, t, cols, isa);
        let rows = self.w.rows;
        // Not zeroed first (a decode step's head output is 1 MB, and a memset of it showed in
        // profiles): the tasks write every element, and the length is set after they have.
        let mut out: Vec<f32> = Vec::with_capacity(t * rows);
        // Tasks own disjoint ranges of weight rows: out[j * rows + r] for r in the range. At
        // most 256 KiB of weights each, and at least 4 tasks per thread where the rows allow,
        // so that a small matrix (a decode step's k projection) still keeps every core busy.
        let by_size = 256 * 1024 / (self.w.blocks * BLOCK);
        let by_threads = rows.div_ceil(4 * rayon::current_num_threads());
        // Whole tiles of rows: 4 for the AVX kernels, 16 for AMX's.
        let tile = if isa == Isa::Amx { 16 } else { 4 };
        let per_task = by_size.min(by_threads).max(tile).next_multiple_of(tile);
        let out_ptr = SharedOut(out.as_mut_ptr());
        let tasks = rows.div_ceil(per_task);
        let run = |task: usize| {
            let r0 = task * per_task;
            let r1 = (r0 + per_task).min(rows);
            // SAFETY: each task writes only columns r0..r1 of out, disjoint across tasks, and
            // `out` outlives the parallel loop.
            unsafe { self.rows_into(&x, r0, r1, isa, &out_ptr) };
        };
        if tasks > 1 {
            (0..tasks).into_par_iter().for_each(run);
        } else {
            (0..tasks).for_each(run);
        }
        // SAFETY: the tasks cover rows 0..rows, and each kernel writes out[j * rows + r] for
        // every token j and row r of its range (`every_kernel_matches_the_exact_int8_product`
        // checks every element of every kernel's output).
        unsafe { out.set_len(t * rows) };
        Ok(out)
    }

    /// `x @ self.T` with the fastest kernel of this CPU.
    pub fn matmul(&self, x: &[f32], t: usize) -> Result<Vec<f32>, KernelError> {
        self.matmul_with(x, t, Isa::detect())
    }

    /// Outputs of weight rows `r0..r1` for every row of `x`.
    ///
    /// # Safety
    /// `out` points at `x.rows * self.rows()` f32 and no other thread writes columns
    /// `r0..r1`; `isa` is one of `Isa::available()`.
    unsafe fn rows_into(&self, input: &Input, r0: usize, r1: usize, isa: Isa, out: &SharedOut) {
        let (x, stride) = (&input.x, self.w.rows);
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Amx => amx::amx(self, x, input.amx.as_ref(), r0, r1, out.0, stride),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => x86::avx512vnni(self, x, r0, r1, out.0, stride),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => x86::avx2(self, x, r0, r1, out.0, stride),
            _ => {
                for r in r0..r1 {
                    let (wq, ws) = (self.w.row_qs(r), self.w.row_scales(r));
                    for j in 0..x.rows {
                        let v = dot_portable(wq, ws, x.row_qs(j), x.row_scales(j));
                        *out.0.add(j * stride + r) = v;
                    }
                }
            }
        }
    }
}

/// A matmul's input rows as int8 blocks, and for the AMX kernel (two rows or more) also in the
/// tile's layout.
struct Input {
    x: Blocks,
    #[cfg(target_arch = "x86_64")]
    amx: Option<amx::AmxInput>,
}

impl Input {
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
    fn quantize(data: &[f32], rows: usize, cols: usize, isa: Isa) -> Self {
        let x = Blocks::quantize(data, rows, cols);
        Self {
            #[cfg(target_arch = "x86_64")]
            amx: (isa == Isa::Amx && rows > 1).then(|| amx::AmxInput::pack(&x)),
            x,
        }
    }
}

/// One output: per block, the exact i32 dot product times both scales, summed in f32.
fn dot_portable(wq: &[i8], ws: &[f32], xq: &[i8], xs: &[f32]) -> f32 {
    let mut acc = 0f32;
    for (b, (&sw, &sx)) in ws.iter().zip(xs).enumerate() {
        let range = b * BLOCK..(b + 1) * BLOCK;
        let dot: i32 = wq[range.clone()]
            .iter()
            .zip(&xq[range])
            .map(|(&w, &x)| w as i32 * x as i32)
            .sum();
        acc += dot as f32 * (sw * sx);
    }
    acc
}

/// The output buffer shared by tasks that write disjoint parts of it.
struct SharedOut(*mut f32);

impl SharedOut {
    /// Through a method, so that closures capture the whole (Sync) wrapper.
    fn ptr(&self) -> *mut f32 {
        self.0
    }
}
// SAFETY: tasks write disjoint elements (see `QuantMatrix::matmul_with`).
unsafe impl Sync for SharedOut {}
unsafe impl Send for SharedOut {}

/// A candle op's f32 input as a contiguous slice of rows: the slice, the leading dimensions
/// and the row length (the last dimension).
fn rows_of<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
) -> candle_core::Result<(&'a [f32], Vec<usize>, usize)> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: f32 input expected");
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op}: contiguous input expected");
    };
    let mut dims = layout.dims().to_vec();
    let last = dims.pop().unwrap_or(0);
    Ok((&data[start..end], dims, last))
}

/// `xs @ w.T` as a candle op: `xs` is `(.., cols)` f32, the result `(.., rows)`.
#[derive(Debug, Clone)]
pub struct Int8Linear(pub std::sync::Arc<QuantMatrix>);

impl CustomOp1 for Int8Linear {
    fn name(&self) -> &'static str {
        "int8-linear"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (data, mut dims, cols) = rows_of(storage, layout, self.name())?;
        let t: usize = dims.iter().product();
        if cols != self.0.cols() {
            candle_core::bail!(
                "int8-linear: input of {cols} columns to a layer of {}",
                self.0.cols()
            );
        }
        let out = self
            .0
            .matmul(data, t)
            .map_err(|e| candle_core::Error::Msg(format!("int8-linear: {e}")))?;
        dims.push(self.0.rows());
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        // Rows with a few large values, as LLM activations have.
        (0..n)
            .map(|i| {
                let x: f32 = rng.gen_range(-1.0..1.0);
                if i % 97 == 0 {
                    x * 30.0
                } else {
                    x
                }
            })
            .collect()
    }

    /// The exact value of what the kernels compute: int8 levels and scales, in f64. Also the
    /// f64 sum of |terms|, which bounds the f32 rounding.
    fn reference(w: &QuantMatrix, x: &Blocks, j: usize, r: usize) -> (f64, f64) {
        let (wq, ws, xq, xs) = (
            w.w.row_qs(r),
            w.w.row_scales(r),
            x.row_qs(j),
            x.row_scales(j),
        );
        let (mut sum, mut abs) = (0f64, 0f64);
        for k in 0..wq.len() {
            let term = wq[k] as f64 * ws[k / BLOCK] as f64 * xq[k] as f64 * xs[k / BLOCK] as f64;
            sum += term;
            abs += term.abs();
        }
        (sum, abs)
    }

    /// Every kernel this CPU has against the exact value of the same int8 arithmetic. Each
    /// output is a sum of `blocks * 32` exact integer products grouped by block; what differs
    /// is f32 rounding: one rounding of each scale product and of each block term (up to
    /// 2 * 2^-24 relative each), and a sum of at most `blocks + 16` terms per path (16 lanes
    /// then a tree), each adding up to 2^-24 of the running |sum| <= sum |term|. So
    /// |kernel - exact| <= (blocks + 20) * 2^-24 * sum |term|.
    #[test]
    fn every_kernel_matches_the_exact_int8_product() {
        for &(rows, cols, t) in &[
            (37, 640, 5),
            (8, 96, 1),
            (70, 576, 9),
            (5, 33, 3),
            (20, 64, 35),
        ] {
            let w = QuantMatrix::from_f32(&random(rows * cols, 1), rows, cols).unwrap();
            let xs = random(t * cols, 2);
            let xq = Blocks::quantize(&xs, t, cols);
            for isa in Isa::available() {
                let out = w.matmul_with(&xs, t, isa).unwrap();
                for j in 0..t {
                    for r in 0..rows {
                        let (exact, abs) = reference(&w, &xq, j, r);
                        let bound = (w.w.blocks + 20) as f64 * f32::EPSILON as f64 / 2.0 * abs;
                        let got = out[j * rows + r] as f64;
                        assert!(
                            (got - exact).abs() <= bound,
                            "{isa:?} {rows}x{cols} t={t} ({j},{r}): {got} vs {exact}, bound {bound}"
                        );
                    }
                }
            }
        }
    }

    /// Against the dense f32 product: rounding x and w to int8 moves each product term by at
    /// most |x| dw/2 + |w| dx/2 + dx dw/4 (half a level of each, per element, with the
    /// block's scales), which bounds the whole difference.
    #[test]
    fn int8_product_is_within_half_a_level_of_the_dense_one() {
        let (rows, cols, t) = (16, 640, 3);
        let wd = random(rows * cols, 3);
        let xd = random(t * cols, 4);
        let w = QuantMatrix::from_f32(&wd, rows, cols).unwrap();
        let xq = Blocks::quantize(&xd, t, cols);
        let out = w.matmul(&xd, t).unwrap();
        for j in 0..t {
            for r in 0..rows {
                let (mut dense, mut bound) = (0f64, 0f64);
                for k in 0..cols {
                    let (a, b) = (xd[j * cols + k] as f64, wd[r * cols + k] as f64);
                    let (dx, dw) = (
                        xq.row_scales(j)[k / BLOCK] as f64,
                        w.w.row_scales(r)[k / BLOCK] as f64,
                    );
                    dense += a * b;
                    bound += a.abs() * dw / 2.0 + b.abs() * dx / 2.0 + dx * dw / 4.0;
                }
                let got = out[j * rows + r] as f64;
                assert!(
                    (got - dense).abs() <= bound * 1.001 + 1e-6,
                    "{got} vs {dense}"
                );
            }
        }
    }

    /// A row's outputs do not depend on which other rows share the call: the same bits for
    /// one token alone and for that token among others (what exact prefix-cache reuse needs).
    ///
    /// Shapes cover partial tiles of every kernel: AMX's 16 rows by 16 tokens (45 = 2 x 16 +
    /// 13 rows; 37 = 2 x 16 + 5 tokens) and the AVX kernels' 4 by 3 or 2.
    #[test]
    fn a_row_gives_the_same_bits_alone_and_in_a_batch() {
        for &(rows, cols, t) in &[(45, 640, 7), (45, 96, 37)] {
            let w = QuantMatrix::from_f32(&random(rows * cols, 5), rows, cols).unwrap();
            let xs = random(t * cols, 6);
            for isa in Isa::available() {
                let all = w.matmul_with(&xs, t, isa).unwrap();
                for j in 0..t {
                    let one = w
                        .matmul_with(&xs[j * cols..(j + 1) * cols], 1, isa)
                        .unwrap();
                    assert_eq!(one, all[j * rows..(j + 1) * rows], "{isa:?} row {j}");
                }
            }
        }
    }

    /// Q8_0 weights are repacked level for level, -128 included, and every kernel reads a
    /// -128 right.
    #[test]
    fn q8_0_tensors_repack_exactly() {
        let (rows, cols) = (6, 64);
        let mut dense = random(rows * cols, 7);
        // A block whose largest magnitude is negative.
        dense[5] = -40.0;
        let t = Tensor::from_vec(dense, (rows, cols), &candle_core::Device::Cpu).unwrap();
        let q = QTensor::quantize(&t, GgmlDType::Q8_0).unwrap();
        let expected = q
            .dequantize(&candle_core::Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let m = QuantMatrix::from_qtensor(&q).unwrap();
        for (r, row) in expected.iter().enumerate() {
            assert_eq!(&m.row_f32(r), row, "row {r}");
        }
        // A hand-made -128 level: every kernel must agree with the exact sum.
        let mut m2 = m.clone();
        m2.w.qs[3] = -128;
        let m2 = QuantMatrix::from_blocks(m2.w);
        let xs = random(2 * cols, 8);
        let xq = Blocks::quantize(&xs, 2, cols);
        for isa in Isa::available() {
            let out = m2.matmul_with(&xs, 2, isa).unwrap();
            let (exact, abs) = reference(&m2, &xq, 1, 0);
            let bound = (m2.w.blocks + 20) as f64 * f32::EPSILON as f64 / 2.0 * abs;
            assert!(
                (out[rows] as f64 - exact).abs() <= bound,
                "{isa:?}: {} vs {exact}",
                out[rows]
            );
        }
    }

    /// `level` against `f32::round` then the clamp: ties, values next to ties (one ulp either
    /// side), the clamp's edges, signed zeros, NaN and infinities, and a sweep.
    #[test]
    fn levels_round_as_f32_round() {
        let old = |y: f32| y.round().clamp(-LEVELS, LEVELS) as i8;
        let mut ys = vec![
            0.0,
            -0.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            127.0,
            127.5,
            128.0,
            1e30,
        ];
        for k in -260..=260 {
            let tie = k as f32 * 0.5;
            ys.extend([
                tie,
                f32::from_bits(tie.to_bits() + 1),
                f32::from_bits(tie.to_bits().wrapping_sub(1)),
            ]);
        }
        ys.extend((0..200_000).map(|i| (i as f32 - 100_000.0) * 0.00131));
        for y in ys {
            for y in [y, -y] {
                assert_eq!(level(y), old(y), "{y:e}");
            }
        }
    }

    #[test]
    fn wrong_sizes_are_errors() {
        assert!(QuantMatrix::from_f32(&[0.0; 10], 3, 4).is_err());
        let w = QuantMatrix::from_f32(&[0.0; 12], 3, 4).unwrap();
        assert!(w.matmul(&[0.0; 5], 1).is_err());
    }

    use candle_core::Tensor;
}
