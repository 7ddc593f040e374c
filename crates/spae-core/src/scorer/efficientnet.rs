//! EfficientNet-Lite (Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional
//! Neural Networks", ICML 2019, arXiv 1905.11946; the Lite variants of the TensorFlow TPU
//! repository, `models/official/efficientnet/lite`), inference only: a stronger frozen ImageNet
//! image side for the DeViSE head ([`super::devise`]) than MobileNetV2.
//!
//! EfficientNet-B0's stages of mobile inverted bottlenecks (MBConv), scaled in width and depth
//! by the compound coefficients (Sec. 3.3), and made "Lite" for mobile accelerators: no
//! squeeze-and-excitation, ReLU6 instead of swish, and the stem (32 channels), the head
//! (1280 channels) and the repeats of the first and last stage left unscaled. Lite2 is width
//! 1.1, depth 1.2 at 260x260.
//!
//! Loaded from the PyTorch port's state dict (ml-illustrated's EfficientNet-Lite-PyTorch, a
//! fork of lukemelas' EfficientNet-PyTorch; weights converted from the TensorFlow checkpoints)
//! under its names (`_conv_stem`, `_bn0`, `_blocks.N._expand_conv`, ..., `_conv_head`, `_bn1`,
//! `_fc`). Convolutions pad as TensorFlow's "SAME" (asymmetric for stride 2), BatchNorm
//! epsilon is TensorFlow's 1e-3, and every BatchNorm is folded into its convolution at load
//! time. The layers are MobileNetV2's channels-last ones ([`super::mobilenet`]).

use std::path::Path;

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;

use super::mobilenet::{
    conv_bn, from_pth, Depthwise, InvertedResidual, InvertedResidualNet, Padding, Pointwise,
    Preprocess,
};
use crate::{Result, SpaeError};

/// The Lite checkpoints' input normalisation, in [0, 1] units: TensorFlow's
/// `efficientnet_lite_builder` subtracts 127 and divides by 128 on 0..255 pixels
/// (`MEAN_RGB = [127.0] * 3`, `STDDEV_RGB = [128.0] * 3`), i.e. maps [0, 1] to about [-1, 1].
pub const LITE_MEAN: [f32; 3] = [127.0 / 255.0; 3];
pub const LITE_STD: [f32; 3] = [128.0 / 255.0; 3];

/// One stage of EfficientNet-B0 (Tan & Le 2019, Table 1), before scaling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage {
    /// Expansion factor of the MBConv blocks (1: no expansion layer).
    pub expand: usize,
    /// Side of the depthwise kernel.
    pub kernel: usize,
    /// Stride of the first block.
    pub stride: usize,
    /// Output channels, before width scaling.
    pub channels: usize,
    /// Blocks, before depth scaling.
    pub repeats: usize,
}

/// EfficientNet-B0's seven MBConv stages (Table 1, stages 2..8).
pub const B0_STAGES: [Stage; 7] = [
    stage(1, 3, 1, 16, 1),
    stage(6, 3, 2, 24, 2),
    stage(6, 5, 2, 40, 2),
    stage(6, 3, 2, 80, 3),
    stage(6, 5, 1, 112, 3),
    stage(6, 5, 2, 192, 4),
    stage(6, 3, 1, 320, 1),
];

const fn stage(
    expand: usize,
    kernel: usize,
    stride: usize,
    channels: usize,
    repeats: usize,
) -> Stage {
    Stage {
        expand,
        kernel,
        stride,
        channels,
        repeats,
    }
}

/// The network's shape: an EfficientNet-Lite variant.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The unscaled stages (EfficientNet-B0's).
    pub stages: Vec<Stage>,
    /// Width multiplier on every stage's channels (rounded to multiples of `depth_divisor`).
    pub width_coefficient: f64,
    /// Depth multiplier on every stage's repeats (rounded up), except the first and last
    /// stage's (Lite).
    pub depth_coefficient: f64,
    /// Channels rounded to multiples of this.
    pub depth_divisor: usize,
    /// Channels of the stem (3x3, stride 2) convolution; not scaled in Lite.
    pub stem_channels: usize,
    /// Channels of the head 1x1 convolution before pooling; not scaled in Lite.
    pub head_channels: usize,
    pub num_classes: usize,
    /// Side images are resized to (the variant's training resolution by default).
    pub input_size: usize,
    /// BatchNorm epsilon (TensorFlow's 1e-3).
    pub bn_eps: f64,
    /// Per-channel input normalisation of [0, 1] RGB pixels.
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Config {
    /// A Lite variant of the given width and depth coefficients and resolution.
    fn lite(width_coefficient: f64, depth_coefficient: f64, input_size: usize) -> Self {
        Self {
            stages: B0_STAGES.to_vec(),
            width_coefficient,
            depth_coefficient,
            depth_divisor: 8,
            stem_channels: 32,
            head_channels: 1280,
            num_classes: 1000,
            input_size,
            bn_eps: 1e-3,
            mean: LITE_MEAN,
            std: LITE_STD,
        }
    }

    /// EfficientNet-Lite0: width 1.0, depth 1.0, 224x224.
    pub fn lite0() -> Self {
        Self::lite(1.0, 1.0, 224)
    }

    /// EfficientNet-Lite1: width 1.0, depth 1.1, 240x240.
    pub fn lite1() -> Self {
        Self::lite(1.0, 1.1, 240)
    }

    /// EfficientNet-Lite2: width 1.1, depth 1.2, 260x260.
    pub fn lite2() -> Self {
        Self::lite(1.1, 1.2, 260)
    }

    /// `channels` times the width coefficient, rounded to the nearest multiple of the
    /// divisor but never below 90% of the scaled value (the reference `round_filters`).
    pub fn round_channels(&self, channels: usize) -> usize {
        let d = self.depth_divisor;
        let scaled = channels as f64 * self.width_coefficient;
        let mut c = d.max((scaled + d as f64 / 2.0) as usize / d * d);
        if (c as f64) < 0.9 * scaled {
            c += d;
        }
        c
    }

    /// Blocks of stage `i`: repeats times the depth coefficient, rounded up; the first and
    /// last stage keep theirs (Lite).
    pub fn stage_repeats(&self, i: usize) -> usize {
        let r = self.stages[i].repeats;
        if i == 0 || i + 1 == self.stages.len() {
            r
        } else {
            (self.depth_coefficient * r as f64).ceil() as usize
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::lite2()
    }
}

/// One mobile inverted bottleneck (MBConv, Tan & Le 2019 Sec. 4; Sandler et al. 2018): 1x1
/// expansion + ReLU6 (absent for expansion 1), depthwise k x k + ReLU6, linear 1x1
/// projection, plus the input when the shape is kept: MobileNetV2's block under the port's
/// names. Drop-connect is identity at inference.
fn mb_conv(
    vb: VarBuilder,
    cin: usize,
    cout: usize,
    st: &Stage,
    stride: usize,
    eps: f64,
) -> candle_core::Result<InvertedResidual> {
    let hidden = cin * st.expand;
    let expand = if st.expand == 1 {
        None
    } else {
        Some(Pointwise::load(
            vb.pp("_expand_conv"),
            vb.pp("_bn0"),
            cin,
            hidden,
            eps,
            true,
        )?)
    };
    let dw = Depthwise::load(
        vb.pp("_depthwise_conv"),
        vb.pp("_bn1"),
        hidden,
        st.kernel,
        stride,
        Padding::Same,
        eps,
    )?;
    let project = Pointwise::load(
        vb.pp("_project_conv"),
        vb.pp("_bn2"),
        hidden,
        cout,
        eps,
        false,
    )?;
    Ok(InvertedResidual::new(
        expand, dw, project, stride, cin, cout,
    ))
}

/// EfficientNet-Lite with folded BatchNorms: images -> ImageNet-1k logits.
#[derive(Debug)]
pub struct EfficientNet {
    cfg: Config,
    net: InvertedResidualNet,
}

impl EfficientNet {
    /// Build from the PyTorch port's state dict names under `vb`.
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        if cfg.stages.is_empty()
            || cfg.input_size == 0
            || cfg.depth_divisor == 0
            || !(cfg.width_coefficient > 0.0 && cfg.depth_coefficient > 0.0)
            || cfg.stages.iter().any(|s| {
                s.expand == 0
                    || s.kernel % 2 == 0
                    || s.stride == 0
                    || s.channels == 0
                    || s.repeats == 0
            })
        {
            return Err(SpaeError::Config(format!("efficientnet config {cfg:?}")));
        }
        let eps = cfg.bn_eps;
        let c0 = cfg.stem_channels;
        let (stem_w, stem_b) = conv_bn(vb.pp("_conv_stem"), vb.pp("_bn0"), (c0, 3, 3, 3), eps)?;
        let mut blocks = Vec::new();
        let mut cin = c0;
        for (i, st) in cfg.stages.iter().enumerate() {
            let cout = cfg.round_channels(st.channels);
            for r in 0..cfg.stage_repeats(i) {
                let stride = if r == 0 { st.stride } else { 1 };
                let vb_block = vb.pp(format!("_blocks.{}", blocks.len()));
                blocks.push(mb_conv(vb_block, cin, cout, st, stride, eps)?);
                cin = cout;
            }
        }
        let head = Pointwise::load(
            vb.pp("_conv_head"),
            vb.pp("_bn1"),
            cin,
            cfg.head_channels,
            eps,
            true,
        )?;
        // _dropout is identity at inference.
        let fc = vb.pp("_fc");
        let fc_w = fc
            .get((cfg.num_classes, cfg.head_channels), "weight")?
            .t()?
            .contiguous()?;
        let fc_b = fc.get(cfg.num_classes, "bias")?;
        Ok(Self {
            cfg: cfg.clone(),
            net: InvertedResidualNet {
                stem_w,
                stem_b,
                stem_padding: Padding::Same,
                blocks,
                head,
                fc_w,
                fc_b,
                preprocess: Preprocess {
                    network: "EfficientNet-Lite",
                    input_size: cfg.input_size,
                    mean: cfg.mean,
                    std: cfg.std,
                },
                device: vb.device().clone(),
            },
        })
    }

    /// Read the port's weights (a legacy or zip `torch.save` file) from `path`.
    pub fn load(path: &Path, cfg: &Config, device: &Device) -> Result<Self> {
        from_pth(
            path,
            device,
            "EfficientNet-Lite weights of this shape",
            |vb| Self::new(cfg, vb),
        )
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        &self.net.device
    }

    /// Blocks (MBConv layers) in the network: 21 for Lite2.
    pub fn blocks(&self) -> usize {
        self.net.blocks.len()
    }

    /// Normalised images (B, 3, H, W) -> logits (B, num_classes).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.net.forward(x)
    }

    /// Images (B, C, S, S) in [0, 1], C = 1 (gray, repeated to RGB) or 3 -> ImageNet class
    /// probabilities (B, num_classes): resized to `input_size` (bilinear), normalised with
    /// the config's mean and std, softmax of the logits.
    pub fn classify(&self, images: &Tensor) -> Result<Tensor> {
        self.net.classify(images)
    }

    /// Images as [`EfficientNet::classify`] takes them -> the pooled features the classifier
    /// reads (B, head_channels).
    pub fn features(&self, images: &Tensor) -> Result<Tensor> {
        self.net.features(images)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    #[test]
    fn lite2_scales_b0_as_the_reference() {
        let cfg = Config::lite2();
        let channels: Vec<usize> = cfg
            .stages
            .iter()
            .map(|s| cfg.round_channels(s.channels))
            .collect();
        // 16*1.1 = 17.6 -> 16, 24 -> 26.4 -> 24, 40 -> 44 -> 48, 80 -> 88, 112 -> 123.2 -> 120,
        // 192 -> 211.2 -> 208, 320 -> 352.
        assert_eq!(channels, [16, 24, 48, 88, 120, 208, 352]);
        let repeats: Vec<usize> = (0..7).map(|i| cfg.stage_repeats(i)).collect();
        // ceil(1.2 r) but the first and last stage: 21 blocks.
        assert_eq!(repeats, [1, 3, 3, 4, 4, 5, 1]);
        let lite0 = Config::lite0();
        let c0: Vec<usize> = lite0
            .stages
            .iter()
            .map(|s| lite0.round_channels(s.channels))
            .collect();
        assert_eq!(c0, [16, 24, 40, 80, 112, 192, 320]);
        assert_eq!((0..7).map(|i| lite0.stage_repeats(i)).sum::<usize>(), 16);
    }

    #[test]
    fn random_weights_run_at_any_side() {
        let dev = Device::Cpu;
        let mut cfg = Config::lite0();
        cfg.input_size = 33;
        // A VarBuilder that makes up every tensor (zeros; running_var zero is fine with eps).
        let vb = VarBuilder::zeros(DType::F32, &dev);
        let net = EfficientNet::new(&cfg, vb).unwrap();
        assert_eq!(net.blocks(), 16);
        let x = Tensor::rand(0f32, 1f32, (2, 1, 20, 20), &dev).unwrap();
        assert_eq!(net.features(&x).unwrap().dims(), [2, 1280]);
        let p = net.classify(&x).unwrap();
        assert_eq!(p.dims(), [2, 1000]);
    }
}
