//! A patch-based encoder and decoder **(ours)**, built only from reshapes, shifted views and
//! matrix products.
//!
//! candle's CPU convolution is slow at a few channels, and its backward pass (a direct
//! transposed convolution) dominated training: a step of the conv model took seconds. Here a
//! 3x3 convolution on a channels-last grid is an im2col matrix (nine shifted views side by
//! side; on CPU one custom op, `crate::im2col`) and one matmul, so forward and backward run
//! mostly in the gemm kernel. The image is cut into p x p patches
//! (space-to-depth) that land on the G x G grid directly; the decoder goes back by two
//! depth-to-space steps (2x, then p/2 x) with a finer residual stage in between.

use candle_core::{DType, Module, Tensor};
use candle_nn::{linear, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::im2col::Im2col3;
use crate::{Result, SpaeError};

/// Sizes of the patch model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchConfig {
    /// Pixels per grid cell along each axis (canvas = G * patch); even.
    pub patch: usize,
    /// Width and residual blocks of the encoder on the G x G grid.
    pub enc_width: usize,
    pub enc_blocks: usize,
    /// Width and residual blocks of the decoder on the G x G grid.
    pub dec_width: usize,
    pub dec_blocks: usize,
    /// Width and blocks of the decoder's finer stage on the 2G x 2G grid.
    pub fine_width: usize,
    pub fine_blocks: usize,
}

impl PatchConfig {
    pub fn validate(&self) -> Result<()> {
        if self.patch < 2 || !self.patch.is_multiple_of(2) {
            return Err(SpaeError::Config(format!(
                "patch is {}, expected an even number of at least 2",
                self.patch
            )));
        }
        if self.enc_width == 0 || self.dec_width == 0 || self.fine_width == 0 {
            return Err(SpaeError::Config(
                "patch model widths must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// (n..., k) x (k -> m) on the last axis as one 2-D matmul (candle's `Linear` on 4-D input
/// runs a batched matmul per leading index, which is much slower).
pub(crate) fn dense(l: &Linear, x: &Tensor) -> candle_core::Result<Tensor> {
    let dims = x.dims().to_vec();
    let k = dims[dims.len() - 1];
    let n: usize = dims[..dims.len() - 1].iter().product();
    let y = l.forward(&x.reshape((n, k))?)?;
    let mut out = dims;
    let last = out.len() - 1;
    out[last] = y.dims()[1];
    y.reshape(out)
}

/// 3x3 convolution, padding 1, on channels-last (b, h, w, c).
#[derive(Debug, Clone)]
pub(crate) struct Conv3 {
    lin: Linear,
}

impl Conv3 {
    pub(crate) fn new(cin: usize, cout: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            lin: linear(9 * cin, cout, vb)?,
        })
    }
}

impl Module for Conv3 {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, h, w, _) = x.dims4()?;
        let y = self.lin.forward(&im2col3(x)?)?;
        let cout = y.dims()[1];
        y.reshape((b, h, w, cout))
    }
}

/// The (b*h*w, 9c) im2col matrix of a 3x3, padding-1 convolution of a channels-last
/// (b, h, w, c) grid, over (dy, dx, c). On CPU in f32 the custom op of `crate::im2col` (one
/// loop forward, one backward); elsewhere [`im2col3_views`].
pub fn im2col3(x: &Tensor) -> candle_core::Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        x.contiguous()?.apply_op1(Im2col3)
    } else {
        im2col3_views(x)
    }
}

/// [`im2col3`] from candle ops alone (pad, nine shifted views, concatenation): the path on
/// devices without the custom op, and the one before it on CPU. Pad to (b, h+2, w+2, c) (plus
/// one spare row so every shift stays in range) and flatten the grid: the input of output
/// (i, j) under shift (dy, dx) is flat position (i*wp + j) + (dy*wp + dx), so each shift is one
/// contiguous slice of h*wp positions (outputs on the padded width; the 2 extra columns are
/// dropped).
pub fn im2col3_views(x: &Tensor) -> candle_core::Result<Tensor> {
    let (b, h, w, c) = x.dims4()?;
    let wp = w + 2;
    let p = x
        .pad_with_zeros(1, 1, 2)?
        .pad_with_zeros(2, 1, 1)?
        .reshape((b, (h + 3) * wp, c))?;
    let mut views = Vec::with_capacity(9);
    for dy in 0..3 {
        for dx in 0..3 {
            views.push(p.narrow(1, dy * wp + dx, h * wp)?.contiguous()?);
        }
    }
    Tensor::cat(&views, 2)?
        .reshape((b, h, wp, 9 * c))?
        .narrow(2, 0, w)?
        .contiguous()?
        .reshape((b * h * w, 9 * c))
}

/// x + conv(silu(conv(silu(x)))), channels-last.
#[derive(Debug, Clone)]
struct Block {
    conv1: Conv3,
    conv2: Conv3,
}

impl Block {
    fn new(ch: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv1: Conv3::new(ch, ch, vb.pp("conv1"))?,
            conv2: Conv3::new(ch, ch, vb.pp("conv2"))?,
        })
    }
}

impl Module for Block {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = self.conv1.forward(&x.silu()?)?;
        x + self.conv2.forward(&h.silu()?)?
    }
}

fn blocks(ch: usize, n: usize, vb: VarBuilder) -> Result<Vec<Block>> {
    (0..n).map(|i| Block::new(ch, vb.pp(i))).collect()
}

fn run(bs: &[Block], mut x: Tensor) -> candle_core::Result<Tensor> {
    for b in bs {
        x = b.forward(&x)?;
    }
    Ok(x)
}

/// (b, H, W, c) -> (b, H/r, W/r, r*r*c).
pub(crate) fn space_to_depth(x: &Tensor, r: usize) -> candle_core::Result<Tensor> {
    let (b, h, w, c) = x.dims4()?;
    x.reshape((b, h / r, r, w / r, r, c))?
        .permute((0, 1, 3, 2, 4, 5))?
        .contiguous()?
        .reshape((b, h / r, w / r, r * r * c))
}

/// (b, h, w, r*r*c) -> (b, h*r, w*r, c).
fn depth_to_space(x: &Tensor, r: usize) -> candle_core::Result<Tensor> {
    let (b, h, w, rrc) = x.dims4()?;
    let c = rrc / (r * r);
    x.reshape((b, h, w, r, r, c))?
        .permute((0, 1, 3, 2, 4, 5))?
        .contiguous()?
        .reshape((b, h * r, w * r, c))
}

/// Image (B, C, canvas, canvas) -> grid (B, G, G, d), channels-last.
#[derive(Debug, Clone)]
pub struct PatchEncoder {
    patch: usize,
    lin_in: Linear,
    blocks: Vec<Block>,
    /// Pooled summary of the image added to every position (`ModelConfig::global_context`).
    global: Option<Linear>,
    /// A frozen network's pooled features of the image, mapped to the width and added to
    /// every position (`ModelConfig::backbone`).
    backbone: Option<Linear>,
    lin_out: Linear,
}

impl PatchEncoder {
    pub fn new(
        pc: &PatchConfig,
        in_channels: usize,
        embed_dim: usize,
        global_context: bool,
        backbone_dim: Option<usize>,
        vb: VarBuilder,
    ) -> Result<Self> {
        let w = pc.enc_width;
        Ok(Self {
            patch: pc.patch,
            lin_in: linear(pc.patch * pc.patch * in_channels, w, vb.pp("lin_in"))?,
            blocks: blocks(w, pc.enc_blocks, vb.pp("blocks"))?,
            global: if global_context {
                Some(linear(w, w, vb.pp("global"))?)
            } else {
                None
            },
            backbone: backbone_dim
                .map(|f| linear(f, w, vb.pp("backbone")))
                .transpose()?,
            lin_out: linear(w, embed_dim, vb.pp("lin_out"))?,
        })
    }

    /// Images (B, C, S, S) -> grid (B, G, G, d); `features` (B, F) are the backbone's pooled
    /// features of the same images, required when the encoder reads a backbone.
    pub fn forward_with(&self, xs: &Tensor, features: Option<&Tensor>) -> Result<Tensor> {
        // (b, c, s, s) -> (b, s, s, c) -> (b, g, g, p*p*c)
        let x = space_to_depth(&xs.permute((0, 2, 3, 1))?, self.patch)?;
        let mut h = run(&self.blocks, dense(&self.lin_in, &x)?)?;
        let (b, _, _, c) = h.dims4()?;
        if let Some(g) = &self.global {
            let pooled = h.mean(1)?.mean(1)?; // (b, c)
            h = h.broadcast_add(&g.forward(&pooled.silu()?)?.reshape((b, 1, 1, c))?)?;
        }
        match (&self.backbone, features) {
            (Some(lin), Some(f)) => {
                h = h.broadcast_add(&lin.forward(f)?.reshape((b, 1, 1, c))?)?;
            }
            (Some(_), None) => {
                return Err(SpaeError::Config(
                    "this encoder reads backbone features, and none were given".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(SpaeError::Config(
                    "backbone features given to an encoder without a backbone".into(),
                ))
            }
            (None, None) => {}
        }
        Ok(dense(&self.lin_out, &h.silu()?)?)
    }
}

/// Grid (B, G, G, d) -> image (B, C, canvas, canvas).
#[derive(Debug, Clone)]
pub struct PatchDecoder {
    patch: usize,
    lin_in: Linear,
    blocks: Vec<Block>,
    /// To 2x2 sub-positions of the finer grid.
    up: Linear,
    fine: Vec<Block>,
    /// To (p/2 x p/2) pixels per fine position.
    lin_out: Linear,
}

impl PatchDecoder {
    pub fn new(
        pc: &PatchConfig,
        in_channels: usize,
        embed_dim: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let r = pc.patch / 2;
        Ok(Self {
            patch: pc.patch,
            lin_in: linear(embed_dim, pc.dec_width, vb.pp("lin_in"))?,
            blocks: blocks(pc.dec_width, pc.dec_blocks, vb.pp("blocks"))?,
            up: linear(pc.dec_width, 4 * pc.fine_width, vb.pp("up"))?,
            fine: blocks(pc.fine_width, pc.fine_blocks, vb.pp("fine"))?,
            lin_out: linear(pc.fine_width, r * r * in_channels, vb.pp("lin_out"))?,
        })
    }
}

impl Module for PatchDecoder {
    fn forward(&self, z: &Tensor) -> candle_core::Result<Tensor> {
        let h = run(&self.blocks, dense(&self.lin_in, z)?)?;
        let f = depth_to_space(&dense(&self.up, &h.silu()?)?, 2)?;
        let f = run(&self.fine, f)?;
        let px = depth_to_space(&dense(&self.lin_out, &f.silu()?)?, self.patch / 2)?;
        // (b, s, s, c) -> (b, c, s, s)
        px.permute((0, 3, 1, 2))?.contiguous()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .and_then(|d| d.abs()?.max_all()?.to_scalar())
            .unwrap()
    }

    #[test]
    fn conv3_matches_candle_conv2d() {
        let dev = Device::Cpu;
        let varmap = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &dev);
        let conv = Conv3::new(2, 3, vb).unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 5, 4, 2), &dev).unwrap();
        let ours = conv.forward(&x).unwrap();
        // Our weight is (cout, 9 * cin) over (dy, dx, cin); candle's is (cout, cin, 3, 3).
        let w = conv
            .lin
            .weight()
            .reshape((3, 3, 3, 2))
            .unwrap()
            .permute((0, 3, 1, 2))
            .unwrap();
        let bias = conv.lin.bias().unwrap();
        let theirs = x
            .permute((0, 3, 1, 2))
            .unwrap()
            .conv2d(&w.contiguous().unwrap(), 1, 1, 1, 1)
            .unwrap()
            .broadcast_add(&bias.reshape((1, 3, 1, 1)).unwrap())
            .unwrap()
            .permute((0, 2, 3, 1))
            .unwrap();
        // Both sum the same n = 9 * cin + 1 terms (products and bias) in different orders
        // (our im2col matmul, candle's conv2d): each within gamma_n * sum |term| of the exact
        // sum (gamma_n ~ n 2^-24, FMA or not), so within twice that of each other, output by
        // output. sum |term| is the same convolution of |x| with |w| plus |b|.
        let abs_terms = x
            .abs()
            .unwrap()
            .permute((0, 3, 1, 2))
            .unwrap()
            .conv2d(&w.abs().unwrap().contiguous().unwrap(), 1, 1, 1, 1)
            .unwrap()
            .broadcast_add(&bias.abs().unwrap().reshape((1, 3, 1, 1)).unwrap())
            .unwrap()
            .permute((0, 2, 3, 1))
            .unwrap();
        let n = (9 * 2 + 1) as f64;
        let allowed = (abs_terms * (2.0 * n * f32::EPSILON as f64 / 2.0)).unwrap();
        let excess = ((&ours - &theirs).unwrap().abs().unwrap() - allowed)
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let diff = max_abs_diff(&ours, &theirs);
        assert!(excess <= 0.0, "{excess} over the bound; diff {diff}");
    }

    /// The custom op and the candle-op path agree, forward and backward (the gradient of
    /// sum(cols * r) for a random r is col2im(r), checked against candle's autograd).
    #[test]
    fn im2col_op_matches_the_view_path_with_gradients() {
        let dev = Device::Cpu;
        let x = candle_core::Var::randn(0f32, 1.0, (2, 5, 4, 3), &dev).unwrap();
        let ours = x.as_tensor().apply_op1(Im2col3).unwrap();
        let theirs = im2col3_views(x.as_tensor()).unwrap();
        assert_eq!(ours.dims(), &[40, 27]);
        let diff = max_abs_diff;
        assert_eq!(diff(&ours, &theirs), 0.0);
        let r = Tensor::randn(0f32, 1.0, (40, 27), &dev).unwrap();
        let g_ours = (ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let g_theirs = (theirs * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let (a, b) = (g_ours.get(&x).unwrap(), g_theirs.get(&x).unwrap());
        assert_eq!(a.dims(), &[2, 5, 4, 3]);
        // Each input's gradient sums the r of the up to 9 shifts it feeds, in a different
        // order on each side: within 2 gamma_9 sum |r| of each other, i.e. 2 * 9 * 2^-24 times
        // col2im(|r|), which the custom op's backward on |r| gives.
        let g_abs = (x.as_tensor().apply_op1(Im2col3).unwrap() * r.abs().unwrap())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let allowed = (g_abs.get(&x).unwrap() * (2.0 * 9.0 * f32::EPSILON as f64 / 2.0)).unwrap();
        let excess = ((a - b).unwrap().abs().unwrap() - allowed)
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            excess <= 0.0,
            "{excess} over the bound; diff {}",
            diff(a, b)
        );
        // Not trivially zero: an interior input feeds all nine shifts, so sum |g| over the 120
        // inputs is a few hundred (each a sum of up to 9 standard normals); 1 is far below it.
        assert!(
            a.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                > 1.0
        );
    }

    #[test]
    fn space_to_depth_round_trips() {
        let x = Tensor::arange(0f32, 2.0 * 8.0 * 8.0 * 3.0, &Device::Cpu)
            .unwrap()
            .reshape((2, 8, 8, 3))
            .unwrap();
        let y = depth_to_space(&space_to_depth(&x, 4).unwrap(), 4).unwrap();
        let a: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(a, b);
    }
}
