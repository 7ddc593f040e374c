//! x86-64 AMX kernel (Intel Sapphire Rapids and later): `tdpbssd` takes the exact i32 dot
//! products of one 32-value block for 16 weight rows by up to 16 tokens in one instruction.
//!
//! Layout. The weights are the A operand: 16 rows of one block straight from the row-major
//! int8 blocks (a strided tile load: no repack, no second copy of the weights). The
//! activations are the B operand, which the instruction wants in groups of 4 bytes per token
//! ("VNNI layout"): [`AmxInput::pack`] writes them so after quantizing, per 16 tokens and
//! block.
//!
//! Arithmetic. Every output is `acc = fma(f32(block dot), w_scale * x_scale, acc)` over its
//! blocks in order, from `acc = 0`, whatever the call: tiles for two tokens or more (tokens in
//! the vector lanes), and for a single token (a decode step, bound by reading the weights)
//! AVX-512 VNNI with the block sums reduced in integers ([`one_token`]). So a token's outputs
//! are the same bits whichever tile or call it lands in, which the prefix cache needs.
//!
//! The tile instructions have no stable Rust intrinsics: they are written in `asm!`, with the
//! tile registers named in the template (the compiler never allocates them).

use std::arch::asm;
use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::{Blocks, QuantMatrix, BLOCK};

/// Weight rows (and tokens) per tile: the tile unit's 16 rows.
const TILE: usize = 16;
/// Bytes of one token's block in the B layout: 8 groups of 4 bytes for each of 16 tokens.
const PACKED_BLOCK: usize = BLOCK * TILE;

/// Whether this CPU and OS run AMX int8 tiles, and this process may use them. Linux grants the
/// tile registers' state only on request (`arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA)`), once
/// per process; without it the first tile instruction faults.
pub(super) fn usable() -> bool {
    static USABLE: OnceLock<bool> = OnceLock::new();
    *USABLE.get_or_init(|| {
        // CPUID leaf 7: EDX bit 24 AMX-TILE, bit 25 AMX-INT8.
        let leaf7 = __cpuid_count(7, 0);
        let cpu = leaf7.edx & (1 << 24) != 0 && leaf7.edx & (1 << 25) != 0;
        // OSXSAVE (leaf 1 ECX bit 27) before XGETBV; XCR0 bits 17-18: the OS saves the tile
        // configuration and data.
        let osxsave = __cpuid(1).ecx & (1 << 27) != 0;
        cpu && osxsave
            && {
                // SAFETY: OSXSAVE is set, so XGETBV exists.
                let xcr0 = unsafe { xcr0() };
                xcr0 & (0b11 << 17) == 0b11 << 17
            }
            && request_tile_state()
    })
}

#[target_feature(enable = "xsave")]
unsafe fn xcr0() -> u64 {
    _xgetbv(0)
}

#[cfg(target_os = "linux")]
fn request_tile_state() -> bool {
    /// `arch/x86/include/uapi/asm/prctl.h`.
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    /// The tile data's XSAVE feature number.
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: a system call with integer arguments; it changes only this process's permission.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    };
    if rc != 0 {
        tracing::debug!("AMX: the kernel refused the tile state (arch_prctl returned {rc})");
    }
    rc == 0
}

#[cfg(not(target_os = "linux"))]
fn request_tile_state() -> bool {
    false
}

/// Activations of two or more tokens in the B layout: per group of 16 tokens and block, 8 rows
/// of 64 bytes (row k: bytes 4k..4k+4 of each token's block), and the group's 16 scales of the
/// block. Tokens past the last are zeros with scale zero.
pub(super) struct AmxInput {
    qs: Vec<i8>,
    scales: Vec<f32>,
}

impl AmxInput {
    pub(super) fn pack(x: &Blocks) -> Self {
        let groups = x.rows.div_ceil(TILE);
        let mut qs = vec![0i8; groups * x.blocks * PACKED_BLOCK];
        let mut scales = vec![0f32; groups * x.blocks * TILE];
        for j in 0..x.rows {
            let (g, n) = (j / TILE, j % TILE);
            let (row, row_scales) = (x.row_qs(j), x.row_scales(j));
            for b in 0..x.blocks {
                let packed = &mut qs[(g * x.blocks + b) * PACKED_BLOCK..][..PACKED_BLOCK];
                for (k, four) in row[b * BLOCK..(b + 1) * BLOCK].chunks_exact(4).enumerate() {
                    packed[k * 4 * TILE + n * 4..][..4].copy_from_slice(four);
                }
                scales[(g * x.blocks + b) * TILE + n] = row_scales[b];
            }
        }
        Self { qs, scales }
    }
}

/// The tile configuration `ldtilecfg` reads: palette 1, then bytes per row and rows of each
/// tile register.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

impl TileConfig {
    /// tmm0 and tmm3: i32 results, `m` rows of `n` tokens; tmm1 and tmm4: `m` weight rows of
    /// one block; tmm2 and tmm5: one block of `n` tokens in the B layout (8 rows).
    fn new(m: usize, n: usize) -> Self {
        let mut cfg = TileConfig {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            colsb: [0; 16],
            rows: [0; 16],
        };
        for (c, a, b) in [(0, 1, 2), (3, 4, 5)] {
            cfg.colsb[c] = (n * 4) as u16;
            cfg.rows[c] = m as u8;
            cfg.colsb[a] = BLOCK as u16;
            cfg.rows[a] = m as u8;
            cfg.colsb[b] = (n * 4) as u16;
            cfg.rows[b] = (BLOCK / 4) as u8;
        }
        cfg
    }

    /// # Safety
    /// The CPU has AMX and the process holds the tile state ([`usable`]).
    unsafe fn load(&self) {
        asm!("ldtilecfg [{0}]", in(reg) self as *const TileConfig, options(nostack, readonly));
    }
}

/// Two consecutive blocks' exact dot products for the loaded configuration: weight rows from
/// `a` (`a_stride` bytes apart) by the packed tokens at `b`; results as i32 rows of 16, the
/// first block's in `c[..16]`, the second's in `c[16..]`.
///
/// # Safety
/// A configuration is loaded; the pointers hold what it reads and writes.
#[inline(always)]
unsafe fn two_blocks(a: *const i8, a_stride: usize, b: *const i8, c: &mut [[i32; TILE]; 2 * TILE]) {
    asm!(
        "tilezero tmm0",
        "tilezero tmm3",
        "tileloadd tmm1, [{a0} + {sa}*1]",
        "tileloadd tmm2, [{b0} + {sb}*1]",
        "tileloadd tmm4, [{a1} + {sa}*1]",
        "tileloadd tmm5, [{b1} + {sb}*1]",
        "tdpbssd tmm0, tmm1, tmm2",
        "tdpbssd tmm3, tmm4, tmm5",
        "tilestored [{c0} + {sc}*1], tmm0",
        "tilestored [{c1} + {sc}*1], tmm3",
        a0 = in(reg) a,
        a1 = in(reg) a.add(BLOCK),
        sa = in(reg) a_stride,
        b0 = in(reg) b,
        b1 = in(reg) b.add(PACKED_BLOCK),
        sb = in(reg) 4 * TILE,
        c0 = in(reg) c.as_mut_ptr(),
        c1 = in(reg) c.as_mut_ptr().add(TILE),
        sc = in(reg) 4 * TILE,
        options(nostack),
    );
}

/// Weight rows `r0..r1` by every token of `x` (`packed`: `x` in the B layout, for two tokens
/// or more).
///
/// # Safety
/// [`usable`] is true and the CPU has AVX-512 F, BW and VNNI (`Isa::available` lists AMX only
/// then); `out` holds `x.rows * stride` f32 with `stride >= r1`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn amx(
    w: &QuantMatrix,
    x: &Blocks,
    packed: Option<&AmxInput>,
    r0: usize,
    r1: usize,
    out: *mut f32,
    stride: usize,
) {
    let mut loaded = None;
    let mut r = r0;
    while r < r1 {
        let m = (r1 - r).min(TILE);
        match packed {
            Some(p) if x.rows > 1 => {
                for g in 0..x.rows.div_ceil(TILE) {
                    let n = (x.rows - g * TILE).min(TILE);
                    if loaded != Some((m, n)) {
                        TileConfig::new(m, n).load();
                        loaded = Some((m, n));
                    }
                    tokens_in_lanes(w, x, p, r, m, g, n, out, stride);
                }
            }
            _ => {
                for j in 0..x.rows {
                    one_token(w, x, j, r, m, out, stride);
                }
            }
        }
        r += m;
    }
    // Back to the initial tile state, which a context switch saves for free.
    asm!("tilerelease", options(nostack, nomem));
}

/// Rows `r..r+m` by tokens `16g..16g+n`: one accumulator vector per weight row, its lanes the
/// tokens.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn tokens_in_lanes(
    w: &QuantMatrix,
    x: &Blocks,
    p: &AmxInput,
    r: usize,
    m: usize,
    g: usize,
    n: usize,
    out: *mut f32,
    stride: usize,
) {
    let row_bytes = w.w.blocks * BLOCK;
    let wq = w.w.row_qs(r).as_ptr();
    // Rows past `m` repeat the last one: their results are computed and dropped.
    let ws: [*const f32; TILE] = std::array::from_fn(|i| w.w.row_scales(r + i.min(m - 1)).as_ptr());
    let mut c = [[0i32; TILE]; 2 * TILE];
    let mut acc = [_mm512_setzero_ps(); TILE];
    let base = g * x.blocks;
    for b in (0..x.blocks).step_by(2) {
        two_blocks(
            wq.add(b * BLOCK),
            row_bytes,
            p.qs.as_ptr().add((base + b) * PACKED_BLOCK),
            &mut c,
        );
        for (h, cb) in c.chunks_exact(TILE).enumerate() {
            let xs = _mm512_loadu_ps(p.scales.as_ptr().add((base + b + h) * TILE));
            for i in 0..TILE {
                let dot = _mm512_cvtepi32_ps(_mm512_loadu_si512(cb[i].as_ptr() as *const _));
                let scale = _mm512_mul_ps(_mm512_set1_ps(*ws[i].add(b + h)), xs);
                acc[i] = _mm512_fmadd_ps(dot, scale, acc[i]);
            }
        }
    }
    // Transposed through a 16 x 16 buffer: each token's m outputs are adjacent in `out`, one
    // (masked) store per token instead of m scattered ones.
    let mut block = [[0f32; TILE]; TILE];
    for (row, a) in block.iter_mut().zip(&acc) {
        _mm512_storeu_ps(row.as_mut_ptr(), *a);
    }
    let column = _mm512_setr_epi32(
        0, 16, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240,
    );
    let mask: __mmask16 = ((1u32 << m) - 1) as __mmask16;
    for k in 0..n {
        let v = _mm512_i32gather_ps::<4>(column, block.as_ptr().cast::<f32>().add(k));
        _mm512_mask_storeu_ps(out.add((g * TILE + k) * stride + r), mask, v);
    }
}

/// Rows `r..r+m` by token `j` alone (a decode step), with AVX-512 VNNI instead of tiles:
/// streaming the weights is what costs here, and 4 rows at a time read 4 streams where a tile
/// reads 16. The arithmetic is the tiles': `vpdpbusd` gives 8 exact partial sums per block
/// (w + 128 unsigned times x, each lane started at -128 times its 4 x values), which integer
/// adds reduce to the block's dot product; then the same f32 multiply and fused add per
/// block, in block order.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn one_token(
    w: &QuantMatrix,
    x: &Blocks,
    j: usize,
    r: usize,
    m: usize,
    out: *mut f32,
    stride: usize,
) {
    let (xq, xs) = (x.row_qs(j).as_ptr(), x.row_scales(j).as_ptr());
    let row_bytes = w.w.blocks * BLOCK;
    // Rows of a decode step's weights are read once, 4 at a time by block, in bursts too short
    // for the hardware prefetcher (640 bytes per row for Gemma 3's head): each read also asks
    // for the same bytes 16 rows ahead. `cargo bench -p llm-client --bench kernels -- head`:
    // 6.1 ms against 11.2 without, and 9.4 for the AVX-512 VNNI kernel; 4 and 32 rows ahead
    // measured 6.5 and 6.7.
    const AHEAD: usize = 16;
    let zero = _mm512_setzero_si512();
    let flip = _mm512_set1_epi8(i8::MIN);
    // Pairs of lanes summed at each level: even lanes of (a, b), then odd ones.
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    // Last level: (row i, block) from lanes 4i, 4i + 1 (first block) and 4i + 2, 4i + 3.
    let last_a = _mm512_setr_epi32(0, 4, 8, 12, 2, 6, 10, 14, 0, 0, 0, 0, 0, 0, 0, 0);
    let last_b = _mm512_add_epi32(last_a, _mm512_set1_epi32(1));
    let mut i = 0;
    while i < m {
        let rows = (m - i).min(4);
        // Missing rows repeat the last one; their results are dropped.
        let wq: [*const i8; 4] =
            std::array::from_fn(|k| w.w.row_qs(r + i + k.min(rows - 1)).as_ptr());
        let ws: [*const f32; 4] =
            std::array::from_fn(|k| w.w.row_scales(r + i + k.min(rows - 1)).as_ptr());
        let mut acc = _mm_setzero_ps();
        for b in (0..x.blocks).step_by(2) {
            let xv = _mm512_loadu_si512(xq.add(b * BLOCK) as *const _);
            let start = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, flip, xv));
            for row in wq {
                _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(b * BLOCK + AHEAD * row_bytes));
            }
            let d: [__m512i; 4] = std::array::from_fn(|k| {
                let wu =
                    _mm512_xor_si512(_mm512_loadu_si512(wq[k].add(b * BLOCK) as *const _), flip);
                _mm512_dpbusd_epi32(start, wu, xv)
            });
            // Rows 0, 1 (and 2, 3): lanes 0-3 row 0's first block, 4-7 its second, 8-15 row 1.
            let p01 = _mm512_add_epi32(
                _mm512_permutex2var_epi32(d[0], even, d[1]),
                _mm512_permutex2var_epi32(d[0], odd, d[1]),
            );
            let p23 = _mm512_add_epi32(
                _mm512_permutex2var_epi32(d[2], even, d[3]),
                _mm512_permutex2var_epi32(d[2], odd, d[3]),
            );
            // Lanes 4i..4i+4: row i, two sums per block.
            let q = _mm512_add_epi32(
                _mm512_permutex2var_epi32(p01, even, p23),
                _mm512_permutex2var_epi32(p01, odd, p23),
            );
            // Lanes 0-3: rows 0-3, first block; 4-7: second block.
            let dots = _mm512_cvtepi32_ps(_mm512_add_epi32(
                _mm512_permutexvar_epi32(last_a, q),
                _mm512_permutexvar_epi32(last_b, q),
            ));
            // Each row's two scales, then rows by block.
            let pair = |k: usize| _mm_castsi128_ps(_mm_loadl_epi64(ws[k].add(b) as *const _));
            let (u01, u23) = (
                _mm_unpacklo_ps(pair(0), pair(1)),
                _mm_unpacklo_ps(pair(2), pair(3)),
            );
            let (w_first, w_second) = (_mm_movelh_ps(u01, u23), _mm_movehl_ps(u23, u01));
            let first = _mm_mul_ps(w_first, _mm_set1_ps(*xs.add(b)));
            let second = _mm_mul_ps(w_second, _mm_set1_ps(*xs.add(b + 1)));
            acc = _mm_fmadd_ps(_mm512_castps512_ps128(dots), first, acc);
            acc = _mm_fmadd_ps(_mm512_extractf32x4_ps::<1>(dots), second, acc);
        }
        let mut lanes = [0f32; 4];
        _mm_storeu_ps(lanes.as_mut_ptr(), acc);
        for (k, &v) in lanes.iter().take(rows).enumerate() {
            *out.add(j * stride + r + i + k) = v;
        }
        i += rows;
    }
}
