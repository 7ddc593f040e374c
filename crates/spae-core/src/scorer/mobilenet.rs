//! torchvision's MobileNetV2 (Sandler et al., "MobileNetV2: Inverted Residuals and Linear
//! Bottlenecks", CVPR 2018, arXiv 1801.04381), width 1.0, inference only: the ImageNet-1k
//! classifier under the ConSE teacher ([`super::conse`]), and the frozen image side of the
//! DeViSE head ([`super::devise`]).
//!
//! Loaded from torchvision's state dict (`mobilenet_v2-b0353104.pth`, read by
//! [`crate::torch_pth`]) under torchvision's names. Every BatchNorm is folded into the
//! convolution before it at load time (inference uses the running statistics, so
//! BN(conv(x)) is itself a convolution with rescaled weights and a bias).
//!
//! Activations run channels-last (B, H, W, C): a 1x1 convolution is then one matmul over
//! contiguous rows, and a depthwise k x k convolution a loop over contiguous channel vectors.
//! candle's grouped `conv2d` splits a depthwise layer into one convolution per channel (up to
//! 960 here), which is far too slow; on the CPU the depthwise layers are one custom op
//! (a direct loop), elsewhere k * k shifted broadcast multiply-adds. The same layers build
//! EfficientNet-Lite ([`super::efficientnet`]), whose depthwise layers are also 5x5 and pad
//! as TensorFlow's "SAME" does.

use std::path::Path;

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Shape, Tensor, D};
use candle_nn::VarBuilder;

use crate::im2col::contiguous_f32;
use crate::{Result, SpaeError};

/// ImageNet channel means and standard deviations (torchvision's `Normalize`), RGB order.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Images per forward pass in [`MobileNetV2::classify`]: at 224x224 the widest activation
/// (the first expansion, 112x112x96 floats) is ~4.8 MB per image, so 32 images keep the peak
/// around a few hundred MB.
const CHUNK: usize = 32;

/// The network's shape (torchvision `mobilenet_v2`, width 1.0).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Inverted-residual stages `[t, c, n, s]`: expansion factor, output channels, number of
    /// blocks, stride of the first block (Sandler et al. 2018, Table 2).
    pub inverted_residual_setting: Vec<[usize; 4]>,
    /// Channels of the first (3x3, stride 2) convolution.
    pub first_channels: usize,
    /// Channels of the last 1x1 convolution, before pooling.
    pub last_channels: usize,
    pub num_classes: usize,
    /// Side images are resized to in [`MobileNetV2::classify`] (ImageNet training used 224).
    pub input_size: usize,
    /// BatchNorm epsilon (torch default).
    pub bn_eps: f64,
}

impl Config {
    /// torchvision's `mobilenet_v2()` for ImageNet-1k.
    pub fn imagenet() -> Self {
        Self {
            inverted_residual_setting: vec![
                [1, 16, 1, 1],
                [6, 24, 2, 2],
                [6, 32, 3, 2],
                [6, 64, 4, 2],
                [6, 96, 3, 1],
                [6, 160, 3, 2],
                [6, 320, 1, 1],
            ],
            first_channels: 32,
            last_channels: 1280,
            num_classes: 1000,
            input_size: 224,
            bn_eps: 1e-5,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::imagenet()
    }
}

/// BatchNorm (running statistics) folded into the convolution `w` (cout, ...) before it:
/// BN(w * x) = scale * (w * x) + (beta - mean * scale) with scale = gamma / sqrt(var + eps),
/// so the folded weight is w scaled per output channel and the folded bias is
/// beta - mean * scale. Returns (weight, bias (cout,)).
pub fn fold_batch_norm(
    w: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor)> {
    let cout = w.dim(0)?;
    let scale = gamma.broadcast_div(&(var + eps)?.sqrt()?)?;
    let mut bshape = vec![1usize; w.rank()];
    bshape[0] = cout;
    let wf = w.broadcast_mul(&scale.reshape(bshape)?)?;
    let bf = (beta - mean.mul(&scale)?)?;
    Ok((wf, bf))
}

/// A convolution with its BatchNorm folded in, read under torchvision's names.
pub(super) fn conv_bn(
    vb_conv: VarBuilder,
    vb_bn: VarBuilder,
    shape: (usize, usize, usize, usize),
    eps: f64,
) -> candle_core::Result<(Tensor, Tensor)> {
    let cout = shape.0;
    let w = vb_conv.get(shape, "weight")?;
    let gamma = vb_bn.get(cout, "weight")?;
    let beta = vb_bn.get(cout, "bias")?;
    let mean = vb_bn.get(cout, "running_mean")?;
    let var = vb_bn.get(cout, "running_var")?;
    fold_batch_norm(&w, &gamma, &beta, &mean, &var, eps).map_err(|e| match e {
        SpaeError::Candle(e) => e,
        other => candle_core::Error::Msg(other.to_string()),
    })
}

pub(super) fn relu6(x: &Tensor) -> candle_core::Result<Tensor> {
    x.clamp(0f32, 6f32)
}

/// A 1x1 convolution (+ folded BN, optional ReLU6) on channels-last activations.
#[derive(Debug)]
pub(super) struct Pointwise {
    /// (cin, cout), so rows of the activation multiply it directly.
    w: Tensor,
    b: Tensor,
    relu6: bool,
}

impl Pointwise {
    pub(super) fn load(
        vb_conv: VarBuilder,
        vb_bn: VarBuilder,
        cin: usize,
        cout: usize,
        eps: f64,
        relu6: bool,
    ) -> candle_core::Result<Self> {
        let (w, b) = conv_bn(vb_conv, vb_bn, (cout, cin, 1, 1), eps)?;
        Ok(Self {
            w: w.reshape((cout, cin))?.t()?.contiguous()?,
            b,
            relu6,
        })
    }

    /// (B, H, W, cin) -> (B, H, W, cout).
    pub(super) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, h, w, c) = x.dims4()?;
        let y = x
            .reshape((b * h * w, c))?
            .matmul(&self.w)?
            .broadcast_add(&self.b)?;
        let y = if self.relu6 { relu6(&y)? } else { y };
        y.reshape((b, h, w, self.w.dim(1)?))
    }
}

/// How a k x k convolution pads its input (k odd).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Padding {
    /// torch's `padding = (k - 1) / 2` on every side: out = (i - 1) / s + 1.
    Symmetric,
    /// TensorFlow's "SAME": out = ceil(i / s), padded by max((out - 1) s + k - i, 0) in all,
    /// half of it (rounded down) before and the rest after, so a stride-2 layer on an even
    /// side pads only after.
    Same,
}

impl Padding {
    /// (output side, zeros before) of a k x k, stride s convolution over side i.
    pub(super) fn out_and_before(self, i: usize, k: usize, s: usize) -> (usize, usize) {
        match self {
            Self::Symmetric => {
                let p = (k - 1) / 2;
                ((i + 2 * p - k) / s + 1, p)
            }
            Self::Same => {
                let out = i.div_ceil(s);
                let total = ((out - 1) * s + k).saturating_sub(i);
                (out, total / 2)
            }
        }
    }
}

/// A depthwise k x k convolution (+ folded BN, optional ReLU6), channels-last.
#[derive(Debug)]
pub(super) struct Depthwise {
    /// (k * k, C): tap dy*k+dx, then channel (contiguous per tap).
    w: Tensor,
    b: Tensor,
    /// The same weights on the host, for the CPU loop.
    w_host: Vec<f32>,
    b_host: Vec<f32>,
    k: usize,
    stride: usize,
    padding: Padding,
    relu6: bool,
}

impl Depthwise {
    /// From a torch depthwise weight (C, 1, k, k) and bias (C,).
    pub(super) fn new(
        w: &Tensor,
        b: &Tensor,
        stride: usize,
        padding: Padding,
        relu6: bool,
    ) -> candle_core::Result<Self> {
        let (c, _, k, k2) = w.dims4()?;
        if k != k2 || k % 2 == 0 || stride == 0 {
            return Err(candle_core::Error::Msg(format!(
                "depthwise: a {k}x{k2} kernel, stride {stride} (odd square kernels only)"
            )));
        }
        let w = w.reshape((c, k * k))?.t()?.contiguous()?;
        Ok(Self {
            w_host: w.flatten_all()?.to_vec1()?,
            b_host: b.to_vec1()?,
            w,
            b: b.clone(),
            k,
            stride,
            padding,
            relu6,
        })
    }

    /// A k x k depthwise layer and its BN under `vb_conv` / `vb_bn`, with ReLU6.
    pub(super) fn load(
        vb_conv: VarBuilder,
        vb_bn: VarBuilder,
        c: usize,
        k: usize,
        stride: usize,
        padding: Padding,
        eps: f64,
    ) -> candle_core::Result<Self> {
        let (w, b) = conv_bn(vb_conv, vb_bn, (c, 1, k, k), eps)?;
        Self::new(&w, &b, stride, padding, true)
    }

    pub(super) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if x.device().is_cpu() && x.dtype() == DType::F32 {
            self.forward_cpu(x)
        } else {
            self.forward_shifted(x)
        }
    }

    /// The direct loop (one custom op).
    fn forward_cpu(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.contiguous()?.apply_op1_no_bwd(&DepthwiseOp {
            w: &self.w_host,
            b: &self.b_host,
            k: self.k,
            stride: self.stride,
            padding: self.padding,
            relu6: self.relu6,
        })
    }

    /// Any device: k * k shifted views of the zero-padded input, each times its tap's
    /// per-channel weight. For stride s, the padded input is cut to s * out rows/columns and
    /// every s-th one is kept (reshape, then narrow to the first of each group of s).
    fn forward_shifted(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, h, w, c) = x.dims4()?;
        let (k, s) = (self.k, self.stride);
        let (ho, top) = self.padding.out_and_before(h, k, s);
        let (wo, left) = self.padding.out_and_before(w, k, s);
        // Tap (dy, dx) reads padded rows dy .. dy + s*ho; pad so the last tap (dy = k - 1)
        // fits.
        let pad_h = (k - 1 + s * ho).saturating_sub(h + top);
        let pad_w = (k - 1 + s * wo).saturating_sub(w + left);
        let xp = x
            .pad_with_zeros(1, top, pad_h)?
            .pad_with_zeros(2, left, pad_w)?;
        let mut acc = self.b.reshape((1, 1, 1, c))?.broadcast_as((b, ho, wo, c))?;
        for dy in 0..k {
            for dx in 0..k {
                let mut v = xp.narrow(1, dy, s * ho)?.narrow(2, dx, s * wo)?;
                if s > 1 {
                    v = v
                        .reshape((b, ho, s, wo, s, c))?
                        .narrow(2, 0, 1)?
                        .narrow(4, 0, 1)?
                        .reshape((b, ho, wo, c))?;
                }
                let wt = self.w.get(dy * k + dx)?.reshape((1, 1, 1, c))?;
                acc = (acc + v.broadcast_mul(&wt)?)?;
            }
        }
        if self.relu6 {
            relu6(&acc)
        } else {
            Ok(acc)
        }
    }
}

/// The depthwise k x k convolution as one CPU loop over (B, H, W, C) f32: each output
/// position starts from the bias and adds, per in-grid tap, the input's channel vector times
/// the tap's channel weights; rows of output are split across threads.
struct DepthwiseOp<'a> {
    /// (k * k, C) tap-major.
    w: &'a [f32],
    b: &'a [f32],
    k: usize,
    stride: usize,
    padding: Padding,
    relu6: bool,
}

impl CustomOp1 for DepthwiseOp<'_> {
    fn name(&self) -> &'static str {
        "depthwise"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, h, w, c) = layout.shape().dims4()?;
        let k = self.k;
        if self.b.len() != c || self.w.len() != k * k * c || self.stride == 0 {
            return Err(candle_core::Error::Msg(format!(
                "depthwise {k}x{k}: {c} channels, weights for {}, stride {}",
                self.b.len(),
                self.stride
            )));
        }
        let x = contiguous_f32(storage, layout, self.name())?;
        let s = self.stride;
        let (ho, top) = self.padding.out_and_before(h, k, s);
        let (wo, left) = self.padding.out_and_before(w, k, s);
        let row_len = wo * c;
        let mut out = vec![0f32; b * ho * row_len];
        let rows = b * ho;
        // Threads only pay off on big layers; small ones run inline.
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(rows)
            .max(1);
        let threads = if out.len() < 1 << 16 { 1 } else { threads };
        let per = rows.div_ceil(threads);
        let run = |first_row: usize, chunk: &mut [f32]| {
            for (r_in, orow) in chunk.chunks_mut(row_len).enumerate() {
                let r = first_row + r_in;
                let (n, oi) = (r / ho, r % ho);
                for oj in 0..wo {
                    let o = &mut orow[oj * c..(oj + 1) * c];
                    o.copy_from_slice(self.b);
                    for dy in 0..k {
                        let Some(ii) = (oi * s + dy).checked_sub(top).filter(|&i| i < h) else {
                            continue;
                        };
                        for dx in 0..k {
                            let Some(jj) = (oj * s + dx).checked_sub(left).filter(|&j| j < w)
                            else {
                                continue;
                            };
                            let cell = ((n * h + ii) * w + jj) * c;
                            let xs = &x[cell..cell + c];
                            let tap = dy * k + dx;
                            let ws = &self.w[tap * c..(tap + 1) * c];
                            for ((o, &xv), &wv) in o.iter_mut().zip(xs).zip(ws) {
                                *o += xv * wv;
                            }
                        }
                    }
                    if self.relu6 {
                        for v in o.iter_mut() {
                            *v = v.clamp(0.0, 6.0);
                        }
                    }
                }
            }
        };
        if threads == 1 {
            run(0, &mut out);
        } else {
            std::thread::scope(|scope| {
                for (t, chunk) in out.chunks_mut(per * row_len).enumerate() {
                    let run = &run;
                    scope.spawn(move || run(t * per, chunk));
                }
            });
        }
        Ok((CpuStorage::F32(out), Shape::from((b, ho, wo, c))))
    }
}

/// One inverted residual block (Sandler et al. 2018, Sec. 3.3): 1x1 expansion + ReLU6
/// (absent when t = 1), depthwise 3x3 + ReLU6, linear 1x1 projection (no activation: the
/// "linear bottleneck"), plus the input when the shape is kept.
/// EfficientNet-Lite's MBConv is this block with k x k depthwise kernels and TF padding.
#[derive(Debug)]
pub(super) struct InvertedResidual {
    expand: Option<Pointwise>,
    dw: Depthwise,
    project: Pointwise,
    residual: bool,
}

impl InvertedResidual {
    /// The block of these layers; the input is added back when the block keeps the shape
    /// (stride 1, `cin == cout`).
    pub(super) fn new(
        expand: Option<Pointwise>,
        dw: Depthwise,
        project: Pointwise,
        stride: usize,
        cin: usize,
        cout: usize,
    ) -> Self {
        Self {
            expand,
            dw,
            project,
            residual: stride == 1 && cin == cout,
        }
    }

    fn load(
        vb: VarBuilder,
        cin: usize,
        cout: usize,
        t: usize,
        stride: usize,
        eps: f64,
    ) -> candle_core::Result<Self> {
        let hidden = cin * t;
        let vb = vb.pp("conv");
        // torchvision numbers the layers of `conv` in order; without the expansion the
        // depthwise layer is conv.0 and the projection conv.1 / conv.2.
        let (expand, dw, project) = if t == 1 {
            let dw = Depthwise::load(
                vb.pp("0.0"),
                vb.pp("0.1"),
                hidden,
                3,
                stride,
                Padding::Symmetric,
                eps,
            )?;
            let pr = Pointwise::load(vb.pp("1"), vb.pp("2"), hidden, cout, eps, false)?;
            (None, dw, pr)
        } else {
            let ex = Pointwise::load(vb.pp("0.0"), vb.pp("0.1"), cin, hidden, eps, true)?;
            let dw = Depthwise::load(
                vb.pp("1.0"),
                vb.pp("1.1"),
                hidden,
                3,
                stride,
                Padding::Symmetric,
                eps,
            )?;
            let pr = Pointwise::load(vb.pp("2"), vb.pp("3"), hidden, cout, eps, false)?;
            (Some(ex), dw, pr)
        };
        Ok(Self::new(expand, dw, project, stride, cin, cout))
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = match &self.expand {
            Some(e) => e.forward(x)?,
            None => x.clone(),
        };
        let h = self.project.forward(&self.dw.forward(&h)?)?;
        if self.residual {
            h + x
        } else {
            Ok(h)
        }
    }
}

/// What MobileNetV2 and EfficientNet-Lite run once loaded: a 3x3 stride-2 stem convolution
/// with ReLU6, inverted residual blocks and a 1x1 head, channels-last, global average pooling
/// and a linear classifier.
#[derive(Debug)]
pub(super) struct InvertedResidualNet {
    /// Stem convolution, torch layout (stem channels, 3, 3, 3), stride 2.
    pub stem_w: Tensor,
    pub stem_b: Tensor,
    pub stem_padding: Padding,
    pub blocks: Vec<InvertedResidual>,
    pub head: Pointwise,
    /// Classifier (head channels, num_classes) and bias.
    pub fc_w: Tensor,
    pub fc_b: Tensor,
    pub preprocess: Preprocess,
    pub device: Device,
}

impl InvertedResidualNet {
    /// Normalised images (B, 3, H, W) -> logits (B, num_classes).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self
            .pooled(x)?
            .matmul(&self.fc_w)?
            .broadcast_add(&self.fc_b)?)
    }

    /// Normalised images (B, 3, H, W) -> the globally pooled head features, the
    /// classifier's input.
    fn pooled(&self, x: &Tensor) -> Result<Tensor> {
        let c0 = self.stem_w.dim(0)?;
        let h = match self.stem_padding {
            Padding::Symmetric => x.conv2d(&self.stem_w, 1, 2, 1, 1)?,
            // TF "SAME" may pad one more after than before: padded by hand.
            Padding::Same => {
                let (_, _, h, w) = x.dims4()?;
                let (ho, top) = Padding::Same.out_and_before(h, 3, 2);
                let (wo, left) = Padding::Same.out_and_before(w, 3, 2);
                let bottom = (2 * (ho - 1) + 3).saturating_sub(h + top);
                let right = (2 * (wo - 1) + 3).saturating_sub(w + left);
                x.pad_with_zeros(2, top, bottom)?
                    .pad_with_zeros(3, left, right)?
                    .conv2d(&self.stem_w, 0, 2, 1, 1)?
            }
        };
        let h = h.broadcast_add(&self.stem_b.reshape((1, c0, 1, 1))?)?;
        let mut h = relu6(&h)?.permute((0, 2, 3, 1))?.contiguous()?;
        for block in &self.blocks {
            h = block.forward(&h)?;
        }
        let h = self.head.forward(&h)?;
        let (b, hh, ww, c) = h.dims4()?;
        // Global average pooling.
        Ok(h.reshape((b, hh * ww, c))?.mean(1)?)
    }

    /// Images (B, C, S, S) in [0, 1], C = 1 (gray, repeated to RGB) or 3 (RGB) -> ImageNet
    /// class probabilities (B, num_classes): preprocessed (resized, normalised), softmax of
    /// the logits, in chunks to bound memory.
    pub fn classify(&self, images: &Tensor) -> Result<Tensor> {
        let classes = self.fc_b.dim(0)?;
        self.preprocess
            .in_chunks(images, &self.device, classes, |x| {
                Ok(candle_nn::ops::softmax(&self.forward(x)?, D::Minus1)?)
            })
    }

    /// Images as [`Self::classify`] takes them -> the pooled features the classifier reads.
    pub fn features(&self, images: &Tensor) -> Result<Tensor> {
        let width = self.fc_w.dim(0)?;
        self.preprocess
            .in_chunks(images, &self.device, width, |x| self.pooled(x))
    }
}

/// MobileNetV2 with folded BatchNorms: images -> ImageNet-1k logits.
#[derive(Debug)]
pub struct MobileNetV2 {
    cfg: Config,
    net: InvertedResidualNet,
}

impl MobileNetV2 {
    /// Build from torchvision's state dict names under `vb`.
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        if cfg.inverted_residual_setting.is_empty()
            || cfg.input_size == 0
            || cfg
                .inverted_residual_setting
                .iter()
                .any(|&[t, c, n, s]| t == 0 || c == 0 || n == 0 || s == 0)
        {
            return Err(SpaeError::Config(format!("mobilenet config {cfg:?}")));
        }
        let eps = cfg.bn_eps;
        let f = vb.pp("features");
        let c0 = cfg.first_channels;
        let (stem_w, stem_b) = conv_bn(f.pp("0.0"), f.pp("0.1"), (c0, 3, 3, 3), eps)?;
        let mut blocks = Vec::new();
        let mut cin = c0;
        let mut idx = 1;
        for &[t, c, n, s] in &cfg.inverted_residual_setting {
            for i in 0..n {
                let stride = if i == 0 { s } else { 1 };
                blocks.push(InvertedResidual::load(
                    f.pp(idx.to_string()),
                    cin,
                    c,
                    t,
                    stride,
                    eps,
                )?);
                cin = c;
                idx += 1;
            }
        }
        let fl = f.pp(idx.to_string());
        let last = Pointwise::load(fl.pp("0"), fl.pp("1"), cin, cfg.last_channels, eps, true)?;
        // classifier.0 is dropout (identity at inference).
        let cl = vb.pp("classifier.1");
        let fc_w = cl
            .get((cfg.num_classes, cfg.last_channels), "weight")?
            .t()?
            .contiguous()?;
        let fc_b = cl.get(cfg.num_classes, "bias")?;
        Ok(Self {
            cfg: cfg.clone(),
            net: InvertedResidualNet {
                stem_w,
                stem_b,
                stem_padding: Padding::Symmetric,
                blocks,
                head: last,
                fc_w,
                fc_b,
                preprocess: Preprocess {
                    network: "MobileNetV2",
                    input_size: cfg.input_size,
                    mean: IMAGENET_MEAN,
                    std: IMAGENET_STD,
                },
                device: vb.device().clone(),
            },
        })
    }

    /// Read torchvision's weights (legacy or zip `torch.save` file) from `path`.
    pub fn load(path: &Path, cfg: &Config, device: &Device) -> Result<Self> {
        from_pth(path, device, "torchvision MobileNetV2 weights", |vb| {
            Self::new(cfg, vb)
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// An error unless this network gives `feature_dim` pooled features of images resized to
    /// `input_size`, what `reader` (named in the message) was trained on.
    pub fn check_gives(&self, feature_dim: usize, input_size: usize, reader: &str) -> Result<()> {
        let (f, s) = (self.cfg.last_channels, self.cfg.input_size);
        if f != feature_dim || s != input_size {
            return Err(SpaeError::Config(format!(
                "{reader} reads {feature_dim} features at {input_size}x{input_size}, the network \
                 gives {f} at {s}x{s}"
            )));
        }
        Ok(())
    }

    pub fn device(&self) -> &Device {
        &self.net.device
    }

    /// Normalised images (B, 3, H, W) (ImageNet mean/std) -> logits (B, num_classes).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.net.forward(x)
    }

    /// Images (B, C, S, S) in [0, 1], C = 1 (gray, repeated to RGB) or 3 (RGB) -> ImageNet
    /// class probabilities (B, num_classes): resized to `input_size` (bilinear, as
    /// torchvision's `Resize`), normalised with the ImageNet mean and std, softmax of the
    /// logits. Runs in chunks of 32 images to bound memory.
    pub fn classify(&self, images: &Tensor) -> Result<Tensor> {
        self.net.classify(images)
    }

    /// Images as [`MobileNetV2::classify`] takes them -> the pooled features the classifier
    /// reads (B, last_channels): the frozen image side of a DeViSE head
    /// ([`super::devise`]).
    pub fn features(&self, images: &Tensor) -> Result<Tensor> {
        self.net.features(images)
    }
}

/// A network built by `new` from the `torch.save` file (legacy or zip) at `path`; weights
/// that do not fit it are an error naming the file and `what` they should have been.
pub(super) fn from_pth<T>(
    path: &Path,
    device: &Device,
    what: &str,
    new: impl FnOnce(VarBuilder) -> Result<T>,
) -> Result<T> {
    let tensors = crate::torch_pth::read_legacy_pth(path, device)?;
    let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
    new(vb).map_err(|e| match e {
        SpaeError::Candle(e) => SpaeError::Checkpoint {
            path: path.to_path_buf(),
            reason: format!("not {what}: {e}"),
        },
        other => other,
    })
}

/// How an ImageNet network wants its images: resized (bilinear) to a square side, then
/// normalised per channel.
#[derive(Debug)]
pub(super) struct Preprocess {
    /// Names the network in errors.
    pub network: &'static str,
    pub input_size: usize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Preprocess {
    /// `f` on chunks of [`CHUNK`] `images` (B, C, S, S) in [0, 1], C = 1 (gray, repeated to
    /// RGB) or 3, moved to `device`, resized and normalised; the results concatenated
    /// ((0, width) for no images).
    pub fn in_chunks(
        &self,
        images: &Tensor,
        device: &Device,
        width: usize,
        f: impl Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let (b, c, _, _) = images.dims4()?;
        if c != 1 && c != 3 {
            return Err(SpaeError::Images(format!(
                "{} takes gray or RGB images, got {c} channels",
                self.network
            )));
        }
        let size = self.input_size;
        let mean = Tensor::new(&self.mean, device)?.reshape((1, 3, 1, 1))?;
        let std = Tensor::new(&self.std, device)?.reshape((1, 3, 1, 1))?;
        let mut parts = Vec::new();
        for start in (0..b).step_by(CHUNK) {
            let n = CHUNK.min(b - start);
            let mut x = images
                .narrow(0, start, n)?
                .to_device(device)?
                .to_dtype(DType::F32)?;
            if c == 1 {
                x = x.repeat((1, 3, 1, 1))?;
            }
            let (_, _, h, w) = x.dims4()?;
            if (h, w) != (size, size) {
                x = x.upsample_bilinear2d(size, size, false)?;
            }
            let x = x.broadcast_sub(&mean)?.broadcast_div(&std)?;
            parts.push(f(&x)?);
        }
        if parts.is_empty() {
            return Ok(Tensor::zeros((0, width), DType::F32, device)?);
        }
        Ok(Tensor::cat(&parts, 0)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Depthwise convolution as candle computes it: grouped conv2d, groups = C, on NCHW,
    /// the input zero-padded as `padding` says.
    fn reference(x: &Tensor, w: &Tensor, b: &Tensor, s: usize, padding: Padding) -> Tensor {
        let (c, _, k, _) = w.dims4().unwrap();
        let (h, wd) = (x.dim(1).unwrap(), x.dim(2).unwrap());
        let (ho, top) = padding.out_and_before(h, k, s);
        let (wo, left) = padding.out_and_before(wd, k, s);
        let bottom = ((ho - 1) * s + k).saturating_sub(h + top);
        let right = ((wo - 1) * s + k).saturating_sub(wd + left);
        let nchw = x
            .permute((0, 3, 1, 2))
            .unwrap()
            .pad_with_zeros(2, top, bottom)
            .unwrap()
            .pad_with_zeros(3, left, right)
            .unwrap()
            .contiguous()
            .unwrap();
        nchw.conv2d(w, 0, s, 1, c)
            .unwrap()
            .broadcast_add(&b.reshape((1, c, 1, 1)).unwrap())
            .unwrap()
            .permute((0, 2, 3, 1))
            .unwrap()
            .contiguous()
            .unwrap()
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    #[test]
    fn depthwise_matches_grouped_conv2d() {
        let dev = Device::Cpu;
        let c = 5;
        // Odd and even sides, so stride 2 meets both paddings.
        for (h, w) in [(7, 6), (8, 9)] {
            let x = Tensor::rand(-1f32, 1f32, (2, h, w, c), &dev).unwrap();
            let wt = Tensor::rand(-1f32, 1f32, (c, 1, 3, 3), &dev).unwrap();
            let b = Tensor::rand(-1f32, 1f32, c, &dev).unwrap();
            for s in [1, 2] {
                let dw = Depthwise::new(&wt, &b, s, Padding::Symmetric, false).unwrap();
                let want = reference(&x, &wt, &b, s, Padding::Symmetric);
                // Each output is a bias plus 9 products, all inputs in [-1, 1]: the sum of
                // absolute terms is at most 10. Summing 10 terms in f32 errs by at most
                // ~10 * eps times that sum (standard recursive-summation bound, products
                // adding one rounding each), and two implementations that sum in different
                // orders can differ by twice that: 2 * 10 * eps * 10 ~ 2.4e-5.
                let tol = 2.0 * 10.0 * f32::EPSILON * 10.0;
                for got in [dw.forward_cpu(&x).unwrap(), dw.forward_shifted(&x).unwrap()] {
                    assert_eq!(got.dims(), want.dims(), "stride {s}, {h}x{w}");
                    let d = max_abs_diff(&got, &want);
                    assert!(d <= tol, "stride {s}, {h}x{w}: max diff {d} > {tol}");
                }
            }
        }
    }

    #[test]
    fn depthwise_relu6_clamps() {
        let dev = Device::Cpu;
        let x = (Tensor::ones((1, 4, 4, 2), DType::F32, &dev).unwrap() * 10.0).unwrap();
        let wt = Tensor::ones((2, 1, 3, 3), DType::F32, &dev).unwrap();
        let b = Tensor::new(&[0f32, -200.0], &dev).unwrap();
        let dw = Depthwise::new(&wt, &b, 1, Padding::Symmetric, true).unwrap();
        for got in [dw.forward_cpu(&x).unwrap(), dw.forward_shifted(&x).unwrap()] {
            let v: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
            for pair in v.chunks(2) {
                assert_eq!(pair, [6.0, 0.0]);
            }
        }
    }

    #[test]
    fn same_padding_matches_tensorflow() {
        // TF "SAME": out = ceil(i / s), total = max((out - 1) s + k - i, 0), half before.
        assert_eq!(Padding::Same.out_and_before(260, 3, 2), (130, 0)); // total 1: after only
        assert_eq!(Padding::Same.out_and_before(65, 5, 2), (33, 2)); // total 4
        assert_eq!(Padding::Same.out_and_before(66, 5, 2), (33, 1)); // total 3
        assert_eq!(Padding::Same.out_and_before(17, 5, 1), (17, 2));
        assert_eq!(Padding::Same.out_and_before(1, 5, 2), (1, 2));
        // torch's symmetric padding: MobileNetV2's 3x3 layers.
        assert_eq!(Padding::Symmetric.out_and_before(224, 3, 2), (112, 1));
        assert_eq!(Padding::Symmetric.out_and_before(7, 3, 2), (4, 1));
    }

    #[test]
    fn depthwise_5x5_same_matches_grouped_conv2d() {
        let dev = Device::Cpu;
        let c = 4;
        for (h, w) in [(7, 6), (8, 9), (2, 3)] {
            let x = Tensor::rand(-1f32, 1f32, (2, h, w, c), &dev).unwrap();
            let b = Tensor::rand(-1f32, 1f32, c, &dev).unwrap();
            for k in [3, 5] {
                let wt = Tensor::rand(-1f32, 1f32, (c, 1, k, k), &dev).unwrap();
                for s in [1, 2] {
                    for padding in [Padding::Same, Padding::Symmetric] {
                        let dw = Depthwise::new(&wt, &b, s, padding, false).unwrap();
                        let want = reference(&x, &wt, &b, s, padding);
                        // As above with k * k + 1 terms of size <= 1.
                        let terms = (k * k + 1) as f32;
                        let tol = 2.0 * terms * f32::EPSILON * terms;
                        for got in [dw.forward_cpu(&x).unwrap(), dw.forward_shifted(&x).unwrap()] {
                            let case = format!("k {k} s {s} {padding:?} {h}x{w}");
                            assert_eq!(got.dims(), want.dims(), "{case}");
                            let d = max_abs_diff(&got, &want);
                            assert!(d <= tol, "{case}: max diff {d} > {tol}");
                        }
                    }
                }
            }
        }
    }
}
