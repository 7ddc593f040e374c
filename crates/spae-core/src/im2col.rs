//! The 3x3 im2col of a channels-last grid as one custom CPU op with its own backward
//! (col2im) **(ours)**.
//!
//! Built from candle ops (pad, nine shifted views, concatenation), the backward pass of
//! [`crate::patch`]'s convolution spent most of a training step outside the matmul: each view's
//! gradient is padded back to the full grid and summed, nine full-size copies per layer.
//! Here the forward pass writes the (positions, 9c) matrix in one loop and the backward pass
//! scatter-adds its gradient back in one loop. CPU and f32 only; other devices keep the
//! candle-op path (`patch::im2col3_views`).

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

/// (b, h, w, c) -> (b*h*w, 9c): row (n, i, j) holds x[n, i+dy-1, j+dx-1, :] for
/// dy, dx in 0..3 (in that order), zeros outside the grid: a 3x3 convolution with padding 1
/// is this matrix times a (9c, cout) weight.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Im2col3;

/// The adjoint of [`Im2col3`] for a (b, h, w, c) input: scatter-adds (b*h*w, 9c) back.
#[derive(Debug, Clone, Copy)]
struct Col2im3 {
    b: usize,
    h: usize,
    w: usize,
    c: usize,
}

/// The f32 values a contiguous CPU tensor's `layout` covers in `storage` (also the
/// quantizer's argmin); an error names `op` otherwise.
pub(crate) fn contiguous_f32<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
) -> candle_core::Result<&'a [f32]> {
    let data = storage.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => Err(candle_core::Error::Msg(format!(
            "{op}: input is not contiguous"
        ))),
    }
}

/// For output coordinate `o` in 0..n and kernel offset `k` in 0..3: the input coordinate
/// o + k - 1, if it lies in 0..n.
fn shifted(o: usize, k: usize, n: usize) -> Option<usize> {
    (o + k).checked_sub(1).filter(|&x| x < n)
}

/// Calls `f(col, cell)` for every (output position, kernel tap) inside the grid: `col` is
/// where the tap's c values start in the (b*h*w, 9c) matrix, `cell` where the input
/// position's c values start in the (b, h, w, c) grid.
fn each_tap(b: usize, h: usize, w: usize, c: usize, mut f: impl FnMut(usize, usize)) {
    for n in 0..b {
        for i in 0..h {
            for j in 0..w {
                let row = ((n * h + i) * w + j) * 9 * c;
                for dy in 0..3 {
                    let Some(ii) = shifted(i, dy, h) else {
                        continue;
                    };
                    for dx in 0..3 {
                        let Some(jj) = shifted(j, dx, w) else {
                            continue;
                        };
                        f(row + (dy * 3 + dx) * c, ((n * h + ii) * w + jj) * c);
                    }
                }
            }
        }
    }
}

impl CustomOp1 for Im2col3 {
    fn name(&self) -> &'static str {
        "im2col3"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, h, w, c) = layout.shape().dims4()?;
        let x = contiguous_f32(storage, layout, self.name())?;
        let mut out = vec![0f32; b * h * w * 9 * c];
        each_tap(b, h, w, c, |col, cell| {
            out[col..col + c].copy_from_slice(&x[cell..cell + c])
        });
        Ok((CpuStorage::F32(out), Shape::from((b * h * w, 9 * c))))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let (b, h, w, c) = arg.dims4()?;
        let g = grad_res
            .contiguous()?
            .apply_op1_no_bwd(&Col2im3 { b, h, w, c })?;
        Ok(Some(g))
    }
}

impl CustomOp1 for Col2im3 {
    fn name(&self) -> &'static str {
        "col2im3"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let Self { b, h, w, c } = *self;
        let row = 9 * c;
        if layout.shape().dims() != [b * h * w, row] {
            return Err(candle_core::Error::Msg(format!(
                "col2im3: gradient shape {:?}, expected [{}, {row}]",
                layout.shape().dims(),
                b * h * w
            )));
        }
        let g = contiguous_f32(storage, layout, self.name())?;
        let mut out = vec![0f32; b * h * w * c];
        each_tap(b, h, w, c, |col, cell| {
            for (o, v) in out[cell..cell + c].iter_mut().zip(&g[col..col + c]) {
                *o += v;
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((b, h, w, c))))
    }
}
