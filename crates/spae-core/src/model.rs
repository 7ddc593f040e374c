//! CNN encoder and decoder of SPAE (SPAE paper, Sec. 3).
//!
//! The encoder maps an image to a G x G grid of d-dim vectors (d = the codebook's dim);
//! the decoder maps any depth's reconstruction zhat_l back to pixels. Input sides that are
//! smaller than the canvas (G * 2^(levels-1)) are zero-padded (centred) before encoding and
//! cropped after decoding: 28x28 digits become a 32x32 canvas and an 8x8 grid.

use candle_core::{Module, Tensor};
use candle_nn::{conv2d, Conv2d, Conv2dConfig, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::patch::PatchConfig;
use crate::pyramid::PyramidConfig;
use crate::quantizer::QuantizerKind;
use crate::{Result, SpaeError};

/// Everything needed to rebuild a model's tensors; stored in checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Side of the (square) input image, in pixels.
    pub image_size: usize,
    /// 1 (gray) or 3 (RGB).
    pub in_channels: usize,
    /// Channels per resolution level; each level after the first halves the side.
    pub channels: Vec<usize>,
    /// Residual blocks per level.
    pub res_blocks: usize,
    /// d: must equal the codebook's embedding dim.
    pub embed_dim: usize,
    pub pyramid: PyramidConfig,
    #[serde(default)]
    pub quantizer: QuantizerKind,
    /// Add a pooled summary of the whole image to every grid position before the encoder's
    /// last convolution **(ours)**: the first layer reads a single position, and its word
    /// should say what the whole image is (the semantic pyramid, SPAE paper Sec. 3.1).
    #[serde(default)]
    pub global_context: bool,
    /// The patch encoder/decoder (`crate::patch`) instead of the convolutional one; then
    /// `channels` and `res_blocks` are unused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<PatchConfig>,
    /// What the decoder reads: SAQ's running mean (the paper's) or every layer's words side by
    /// side. Checkpoints without the field read the mean.
    #[serde(default, skip_serializing_if = "DecoderInput::is_mean")]
    pub decoder_input: DecoderInput,
    /// The encoder also reads a frozen ImageNet network's pooled features of the image
    /// **(ours)**: a visual prior learned from 1.3M images, so that the semantic layers' words
    /// carry to concepts the tokenizer never saw (the paper gets this from CLIP's image
    /// encoder, SPAE paper Sec. 3.1). Patch encoder only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backbone: Option<BackboneConfig>,
    /// The encoder's output starts from the codebook entries a frozen image-text teacher finds
    /// most relevant to the image **(ours)**: z = encoder(x) + softmax(relevance / T) . E, the
    /// relevance-weighted mean of the codebook rows. The teacher places concepts it never
    /// trained on through its text side, and with the prior the first layers' words follow it
    /// on them, where an encoder trained against it on a few hundred concepts does not. The
    /// V2L tokenizer picks its global words from CLIP's image-vocabulary similarity the same
    /// way (Zhu et al., CVPR 2024); the SPAE paper's encoder learns them (Sec. 3.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior: Option<PriorConfig>,
}

/// The teacher behind [`ModelConfig::prior`]. Like the backbone it is not in the checkpoint;
/// whoever loads the model attaches it ([`crate::SpaeModel::attach_prior`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorConfig {
    /// The scorer, as `spae-icl train --scorer` names it (members joined by `+`,
    /// `MEMBER@SIDE` to show a member the images at SIDE x SIDE).
    pub scorer: String,
    /// sha256 of what `scorer` names (for an ensemble, of the spec and its members' hashes),
    /// so a loader can refuse a teacher other than the one the model was trained with.
    pub scorer_sha256: String,
    /// The data set whose caption style the teacher's text side uses.
    pub data: String,
    /// Softmax temperature over the cosines (small: the mean is that of a few top words).
    pub temperature: f64,
}

/// The frozen network an encoder reads features from: torchvision's ImageNet MobileNetV2
/// (`crate::scorer::mobilenet`), named by its weights file's sha256. Its weights are not in
/// the checkpoint; whoever loads the model attaches them ([`crate::SpaeModel::attach_backbone`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackboneConfig {
    /// Side the image is resized to before the network.
    pub input_size: usize,
    /// Width of the pooled features (1280 for MobileNetV2 width 1.0).
    pub feature_dim: usize,
    /// sha256 of the weights file (`mobilenet_v2-b0353104.pth`).
    pub weights_sha256: String,
}

/// The decoder's input at depth l **(ours: `Layers`)**.
///
/// `Mean` is the paper's zhat_l = (E_1 + ... + E_l) / l (`crate::quantizer`): one d-dim vector
/// per grid position, in which the decoder cannot tell which layer a word came from. `Layers`
/// puts the upsampled E_1..E_L in L slots of d dims (slot k > l zero) scaled by the same 1/l,
/// so the decoder sees each layer's word apart. A `Layers` decoder whose first linear map
/// repeats a `Mean` decoder's weights in every slot computes exactly what that decoder
/// computes ([`crate::SpaeModel::with_decoder_input`]): a trained mean decoder widens without
/// losing anything, and its words stay the same.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecoderInput {
    #[default]
    Mean,
    Layers,
}

impl DecoderInput {
    pub fn is_mean(&self) -> bool {
        *self == DecoderInput::Mean
    }
}

impl ModelConfig {
    /// The default model for 28x28 gray digits and clothes: 32x32 canvas cut into 4x4
    /// patches, an 8x8 grid, pyramid 1,2,4,8,8 (149 tokens; the first two layers are the
    /// semantic ones), the patch encoder/decoder (fast on CPU), global context on.
    pub fn mnist(embed_dim: usize) -> Self {
        Self {
            image_size: 28,
            in_channels: 1,
            channels: vec![],
            res_blocks: 0,
            embed_dim,
            pyramid: PyramidConfig {
                grid: 8,
                layers: vec![1, 2, 4, 8, 8],
            },
            quantizer: QuantizerKind::Saq,
            global_context: true,
            patch: Some(PatchConfig {
                patch: 4,
                enc_width: 96,
                enc_blocks: 1,
                dec_width: 128,
                dec_blocks: 2,
                fine_width: 48,
                fine_blocks: 1,
            }),
            decoder_input: DecoderInput::Mean,
            backbone: None,
            prior: None,
        }
    }

    /// The convolutional model of the first release (slow on CPU; kept for its checkpoints).
    pub fn mnist_conv(embed_dim: usize) -> Self {
        Self {
            channels: vec![32, 64, 128],
            res_blocks: 1,
            global_context: false,
            patch: None,
            ..Self::mnist(embed_dim)
        }
    }

    /// Downsampling factor 2^(levels-1).
    pub fn downsample(&self) -> usize {
        1 << self.channels.len().saturating_sub(1)
    }

    /// Side of the padded canvas the encoder sees: G * 2^(levels-1).
    pub fn canvas(&self) -> usize {
        match &self.patch {
            Some(p) => self.pyramid.grid * p.patch,
            None => self.pyramid.grid * self.downsample(),
        }
    }

    /// Channels of the decoder's input: d, or d per pyramid layer for [`DecoderInput::Layers`].
    pub fn decoder_in_dim(&self) -> usize {
        match self.decoder_input {
            DecoderInput::Mean => self.embed_dim,
            DecoderInput::Layers => self.embed_dim * self.pyramid.depth(),
        }
    }

    /// G: side of the encoder's output grid (the pyramid's).
    pub fn grid(&self) -> usize {
        self.pyramid.grid
    }

    /// The smallest grid that covers `image_size` pixels after `levels` resolution levels
    /// and that every layer side in `layers` divides (28px, 3 levels, 1,2,4,8 -> 8).
    pub fn grid_for(image_size: usize, levels: usize, layers: &[usize]) -> usize {
        let down = 1usize << levels.saturating_sub(1);
        let lcm = layers.iter().fold(
            1usize,
            |acc, &s| if s == 0 { acc } else { acc / gcd(acc, s) * s },
        );
        image_size.div_ceil(down).div_ceil(lcm) * lcm
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(SpaeError::Config(m));
        if self.image_size == 0 {
            return bad("image_size must be at least 1".into());
        }
        if !matches!(self.in_channels, 1 | 3) {
            return bad(format!(
                "in_channels is {}, expected 1 or 3",
                self.in_channels
            ));
        }
        if let Some(p) = &self.patch {
            p.validate()?;
        } else if self.channels.is_empty() || self.channels.contains(&0) {
            return bad(format!(
                "channels {:?} must be non-empty and positive",
                self.channels
            ));
        }
        if self.embed_dim == 0 {
            return bad("embed_dim must be at least 1".into());
        }
        if let Some(b) = &self.backbone {
            if self.patch.is_none() {
                return bad("a backbone needs the patch encoder".into());
            }
            if b.input_size == 0 || b.feature_dim == 0 {
                return bad(format!("backbone {b:?} has an empty dimension"));
            }
        }
        if let Some(p) = &self.prior {
            if !(p.temperature.is_finite() && p.temperature > 0.0) {
                return bad(format!(
                    "prior temperature {} must be positive",
                    p.temperature
                ));
            }
        }
        if self.decoder_input == DecoderInput::Layers && self.patch.is_none() {
            return bad("decoder_input \"layers\" needs the patch decoder".into());
        }
        self.pyramid.validate()?;
        if self.canvas() < self.image_size {
            return bad(format!(
                "a {}x{} grid after {} levels covers {}px, less than the {}px image",
                self.grid(),
                self.grid(),
                self.channels.len(),
                self.canvas(),
                self.image_size
            ));
        }
        Ok(())
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn conv(cin: usize, cout: usize, k: usize, stride: usize, vb: VarBuilder) -> Result<Conv2d> {
    let cfg = Conv2dConfig {
        padding: k / 2,
        stride,
        ..Default::default()
    };
    Ok(conv2d(cin, cout, k, cfg, vb)?)
}

/// x + conv(silu(conv(silu(x)))).
#[derive(Debug, Clone)]
struct ResBlock {
    conv1: Conv2d,
    conv2: Conv2d,
}

impl ResBlock {
    fn new(ch: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv1: conv(ch, ch, 3, 1, vb.pp("conv1"))?,
            conv2: conv(ch, ch, 3, 1, vb.pp("conv2"))?,
        })
    }
}

impl Module for ResBlock {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let h = self.conv1.forward(&xs.silu()?)?;
        let h = self.conv2.forward(&h.silu()?)?;
        xs + h
    }
}

fn res_stack(ch: usize, n: usize, vb: VarBuilder) -> Result<Vec<ResBlock>> {
    (0..n).map(|i| ResBlock::new(ch, vb.pp(i))).collect()
}

fn run(blocks: &[ResBlock], mut xs: Tensor) -> candle_core::Result<Tensor> {
    for b in blocks {
        xs = b.forward(&xs)?;
    }
    Ok(xs)
}

/// Image (B, C, canvas, canvas) -> grid (B, d, G, G).
#[derive(Debug, Clone)]
pub struct Encoder {
    conv_in: Conv2d,
    /// Per level: residual blocks, then (except the last) a stride-2 conv to the next level.
    levels: Vec<(Vec<ResBlock>, Option<Conv2d>)>,
    /// 1x1 conv on the spatially pooled features, added everywhere (see `global_context`).
    global: Option<Conv2d>,
    conv_out: Conv2d,
}

impl Encoder {
    pub fn new(cfg: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        let ch = &cfg.channels;
        let conv_in = conv(cfg.in_channels, ch[0], 3, 1, vb.pp("conv_in"))?;
        let mut levels = Vec::with_capacity(ch.len());
        for (i, &c) in ch.iter().enumerate() {
            let vb_l = vb.pp(format!("levels.{i}"));
            let blocks = res_stack(c, cfg.res_blocks, vb_l.pp("res"))?;
            let down = match ch.get(i + 1) {
                Some(&next) => Some(conv(c, next, 3, 2, vb_l.pp("down"))?),
                None => None,
            };
            levels.push((blocks, down));
        }
        let last = ch[ch.len() - 1];
        let global = if cfg.global_context {
            Some(conv(last, last, 1, 1, vb.pp("global"))?)
        } else {
            None
        };
        let conv_out = conv(last, cfg.embed_dim, 1, 1, vb.pp("conv_out"))?;
        Ok(Self {
            conv_in,
            levels,
            global,
            conv_out,
        })
    }
}

impl Module for Encoder {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let mut h = self.conv_in.forward(xs)?;
        for (blocks, down) in &self.levels {
            h = run(blocks, h)?;
            if let Some(down) = down {
                h = down.forward(&h)?;
            }
        }
        if let Some(g) = &self.global {
            // (b, c, g, g) -> (b, c, 1, 1), broadcast back over the grid
            let pooled = h.mean_keepdim(3)?.mean_keepdim(2)?;
            h = h.broadcast_add(&g.forward(&pooled.silu()?)?)?;
        }
        self.conv_out.forward(&h.silu()?)
    }
}

/// Grid (B, d, G, G) -> image (B, C, canvas, canvas).
#[derive(Debug, Clone)]
pub struct Decoder {
    conv_in: Conv2d,
    /// Coarsest level first: residual blocks, then (except the finest) a 2x nearest
    /// upsample and a conv to the next finer level's channels.
    levels: Vec<(Vec<ResBlock>, Option<Conv2d>)>,
    conv_out: Conv2d,
}

impl Decoder {
    pub fn new(cfg: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        let ch = &cfg.channels;
        let last = ch[ch.len() - 1];
        let conv_in = conv(cfg.embed_dim, last, 1, 1, vb.pp("conv_in"))?;
        let mut levels = Vec::with_capacity(ch.len());
        for i in (0..ch.len()).rev() {
            let vb_l = vb.pp(format!("levels.{i}"));
            let blocks = res_stack(ch[i], cfg.res_blocks, vb_l.pp("res"))?;
            let up = match i.checked_sub(1) {
                Some(prev) => Some(conv(ch[i], ch[prev], 3, 1, vb_l.pp("up"))?),
                None => None,
            };
            levels.push((blocks, up));
        }
        let conv_out = conv(ch[0], cfg.in_channels, 3, 1, vb.pp("conv_out"))?;
        Ok(Self {
            conv_in,
            levels,
            conv_out,
        })
    }
}

impl Module for Decoder {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let mut h = self.conv_in.forward(xs)?;
        for (blocks, up) in &self.levels {
            h = run(blocks, h)?;
            if let Some(up) = up {
                let (_, _, hh, ww) = h.dims4()?;
                h = up.forward(&h.upsample_nearest2d(hh * 2, ww * 2)?)?;
            }
        }
        self.conv_out.forward(&h.silu()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_covers_the_image_and_fits_the_pyramid() {
        assert_eq!(ModelConfig::grid_for(28, 3, &[1, 2, 4, 8, 8]), 8);
        assert_eq!(ModelConfig::grid_for(128, 4, &[1, 2, 4, 8, 16]), 16);
        assert_eq!(ModelConfig::grid_for(28, 2, &[1, 2, 7, 14]), 14);
        let mut cfg = ModelConfig::mnist(16);
        assert_eq!(cfg.canvas(), 32);
        cfg.validate().unwrap();
        cfg.image_size = 40;
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("less than the 40px"));
    }
}
