//! `SpaeModel`: encoder + frozen codebook + SAQ pyramid + decoder; images <-> words.

use std::sync::Arc;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use crate::codebook::Codebook;
use crate::model::{Decoder, DecoderInput, Encoder, ModelConfig};
use crate::patch::{PatchDecoder, PatchEncoder};
use crate::quantizer::{Quantized, SaqQuantizer};
use crate::scorer::mobilenet::MobileNetV2;
use crate::scorer::SemanticScorer;
use crate::train::straight_through;
use crate::{Result, SpaeError};

/// One layer of one image's token pyramid, row-major over its s x s positions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenLayer {
    pub side: usize,
    /// Codebook entry indices.
    pub indices: Vec<u32>,
    /// The LLM's token ids for those entries (what a local model is fed).
    pub token_ids: Vec<u32>,
    /// The entries as plain words (what an API model reads).
    pub words: Vec<String>,
}

/// The words of one image, coarse layers first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenPyramid {
    pub layers: Vec<TokenLayer>,
}

impl TokenPyramid {
    pub fn depth(&self) -> usize {
        self.layers.len()
    }

    /// Every word, layer by layer.
    pub fn words(&self) -> impl Iterator<Item = &str> {
        self.layers
            .iter()
            .flat_map(|l| l.words.iter().map(String::as_str))
    }

    /// One line per layer, words separated by spaces.
    pub fn to_text(&self) -> String {
        self.layers
            .iter()
            .map(|l| l.words.join(" "))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Build from words in layer order (any whitespace between them), splitting them into
    /// layers by the pyramid's sizes. The number of words must fill whole layers.
    pub fn from_words(words: &[&str], codebook: &Codebook, layer_sides: &[usize]) -> Result<Self> {
        let mut indices = Vec::with_capacity(words.len());
        for (i, w) in words.iter().enumerate() {
            let idx = codebook.index_of_word(w).ok_or_else(|| {
                SpaeError::Tokens(format!("word {} ({w:?}) is not a codebook entry", i + 1))
            })?;
            indices.push(idx as u32);
        }
        let mut layers = Vec::new();
        let mut rest = indices.as_slice();
        for &s in layer_sides {
            if rest.is_empty() {
                break;
            }
            if rest.len() < s * s {
                return Err(SpaeError::Tokens(format!(
                    "{} words do not fill whole layers: layer {} needs {} more",
                    words.len(),
                    layers.len() + 1,
                    s * s - rest.len()
                )));
            }
            let (this, next) = rest.split_at(s * s);
            layers.push(layer_from_indices(s, this, codebook));
            rest = next;
        }
        if !rest.is_empty() || layers.is_empty() {
            return Err(SpaeError::Tokens(format!(
                "{} words do not match the pyramid's layer sizes {:?}",
                words.len(),
                layer_sides.iter().map(|s| s * s).collect::<Vec<_>>()
            )));
        }
        Ok(Self { layers })
    }
}

fn layer_from_indices(side: usize, indices: &[u32], codebook: &Codebook) -> TokenLayer {
    TokenLayer {
        side,
        indices: indices.to_vec(),
        token_ids: indices
            .iter()
            .map(|&i| codebook.token_ids()[i as usize])
            .collect(),
        words: indices
            .iter()
            .map(|&i| codebook.word(i as usize).to_string())
            .collect(),
    }
}

/// The encoder of either architecture.
enum AnyEncoder {
    Conv(Encoder),
    Patch(PatchEncoder),
}

enum AnyDecoder {
    Conv(Decoder),
    Patch(PatchDecoder),
}

/// What the encoder reads besides the pixels, from frozen networks. Frozen, so a training run
/// computes each image's once and keeps them ([`SpaeModel::frozen_inputs`]).
#[derive(Debug, Clone, Default)]
pub struct FrozenInputs {
    /// The backbone's pooled features (B, F) (`ModelConfig::backbone`).
    pub features: Option<Tensor>,
    /// The teacher's prior in codebook space (B, d) (`ModelConfig::prior`).
    pub prior: Option<Tensor>,
}

impl FrozenInputs {
    /// Row `i` of every input.
    pub fn row(&self, i: usize) -> Result<Self> {
        let pick = |t: &Option<Tensor>| t.as_ref().map(|t| t.narrow(0, i, 1)).transpose();
        Ok(Self {
            features: pick(&self.features)?,
            prior: pick(&self.prior)?,
        })
    }

    /// The rows stacked in order (all of one model, so all hold the same inputs).
    pub fn cat(rows: &[&Self]) -> Result<Self> {
        let stack = |get: fn(&Self) -> Option<&Tensor>| -> Result<Option<Tensor>> {
            let parts: Option<Vec<&Tensor>> = rows.iter().map(|r| get(r)).collect();
            match parts {
                Some(p) if !p.is_empty() => Ok(Some(Tensor::cat(&p, 0)?)),
                _ => Ok(None),
            }
        };
        Ok(Self {
            features: stack(|r| r.features.as_ref())?,
            prior: stack(|r| r.prior.as_ref())?,
        })
    }
}

/// The SPAE tokenizer: images to a pyramid of LLM words and back.
pub struct SpaeModel {
    cfg: ModelConfig,
    varmap: VarMap,
    encoder: AnyEncoder,
    decoder: AnyDecoder,
    codebook: Arc<Codebook>,
    quantizer: SaqQuantizer,
    device: Device,
    /// The frozen network whose features the encoder reads (`ModelConfig::backbone`), once
    /// attached.
    backbone: Option<Arc<MobileNetV2>>,
    /// The teacher whose relevance makes the encoder's prior (`ModelConfig::prior`), once
    /// attached.
    prior: Option<Arc<dyn SemanticScorer>>,
}

impl std::fmt::Debug for SpaeModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpaeModel")
            .field("config", &self.cfg)
            .field("codebook", &self.codebook)
            .field("parameters", &self.num_parameters())
            .finish()
    }
}

impl SpaeModel {
    /// A model with freshly initialised (trainable) weights around a frozen codebook.
    /// The codebook is rounded to f16, as checkpoints store it, so a saved and reloaded
    /// model computes exactly what this one does.
    pub fn new(cfg: ModelConfig, codebook: Codebook, device: &Device) -> Result<Self> {
        cfg.validate()?;
        if codebook.dim() != cfg.embed_dim {
            return Err(SpaeError::Config(format!(
                "embed_dim is {}, but the codebook ({}) has dim {}",
                cfg.embed_dim,
                codebook.info().source,
                codebook.dim()
            )));
        }
        let rows = codebook
            .embeddings()
            .to_dtype(DType::F16)?
            .to_dtype(DType::F32)?;
        let codebook = Codebook::new(
            codebook.info().clone(),
            codebook.token_ids().to_vec(),
            codebook.pieces().to_vec(),
            rows.to_device(device)?,
        )?;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let (encoder, decoder) = match &cfg.patch {
            Some(pc) => (
                AnyEncoder::Patch(PatchEncoder::new(
                    pc,
                    cfg.in_channels,
                    cfg.embed_dim,
                    cfg.global_context,
                    cfg.backbone.as_ref().map(|b| b.feature_dim),
                    vb.pp("encoder"),
                )?),
                AnyDecoder::Patch(PatchDecoder::new(
                    pc,
                    cfg.in_channels,
                    cfg.decoder_in_dim(),
                    vb.pp("decoder"),
                )?),
            ),
            None => (
                AnyEncoder::Conv(Encoder::new(&cfg, vb.pp("encoder"))?),
                AnyDecoder::Conv(Decoder::new(&cfg, vb.pp("decoder"))?),
            ),
        };
        let quantizer = SaqQuantizer::new(cfg.pyramid.clone(), cfg.quantizer)?;
        Ok(Self {
            cfg,
            varmap,
            encoder,
            decoder,
            codebook: Arc::new(codebook),
            quantizer,
            device: device.clone(),
            backbone: None,
            prior: None,
        })
    }

    /// Like [`SpaeModel::new`], with weights drawn from `seed` (Kaiming-normal convolution
    /// kernels, zero biases) so `spae-icl init` is reproducible.
    pub fn new_seeded(
        cfg: ModelConfig,
        codebook: Codebook,
        device: &Device,
        seed: u64,
    ) -> Result<Self> {
        let model = Self::new(cfg, codebook, device)?;
        let mut rng = SplitMix64(seed);
        for (name, var) in model.named_vars() {
            let shape = var.dims().to_vec();
            let n: usize = shape.iter().product();
            let values: Vec<f32> = if name.ends_with("bias") {
                vec![0.0; n]
            } else {
                let fan_in: usize = shape.iter().skip(1).product::<usize>().max(1);
                let std = (2.0 / fan_in as f64).sqrt();
                (0..n).map(|_| (rng.normal() * std) as f32).collect()
            };
            var.set(&Tensor::from_vec(values, shape, device)?)?;
        }
        model.match_codebook_scale(&mut rng)?;
        Ok(model)
    }

    /// Scale the encoder's last convolution so that z starts on the codebook's scale.
    /// Kaiming init leaves z tens of times larger than word embeddings (whose rows have norm
    /// ~1), and the commitment loss then starts in the thousands and swamps reconstruction.
    /// Measured on a seeded batch of noise images, so it is deterministic.
    fn match_codebook_scale(&self, rng: &mut SplitMix64) -> Result<()> {
        let c = &self.cfg;
        let n = 16 * c.in_channels * c.image_size * c.image_size;
        let probe: Vec<f32> = (0..n).map(|_| rng.uniform() as f32).collect();
        let probe = Tensor::from_vec(
            probe,
            (16, c.in_channels, c.image_size, c.image_size),
            &self.device,
        )?;
        // Before a backbone is attached its features count as zero: the term starts at its
        // (zero) bias either way, so the scale is that of the rest of the encoder. The prior is
        // added after the encoder and is left out of its scale.
        let features = match (&self.cfg.backbone, &self.backbone) {
            (Some(b), None) => Some(Tensor::zeros(
                (16, b.feature_dim),
                DType::F32,
                &self.device,
            )?),
            _ => self.backbone_features(&probe)?,
        };
        let prior = match &self.cfg.prior {
            Some(_) => Some(Tensor::zeros(
                (16, self.cfg.embed_dim),
                DType::F32,
                &self.device,
            )?),
            None => None,
        };
        let z_rms = self
            .encode_with(&probe, &FrozenInputs { features, prior })?
            .sqr()?
            .mean_all()?
            .to_scalar::<f32>()?
            .sqrt();
        let e_rms = (self.codebook.sq_norms().mean_all()?.to_scalar::<f32>()?
            / self.codebook.dim() as f32)
            .sqrt();
        if !(z_rms.is_finite() && z_rms > 0.0) {
            return Ok(());
        }
        let scale = (e_rms / z_rms) as f64;
        for (name, var) in self.named_vars() {
            if name.starts_with("encoder.conv_out.") || name.starts_with("encoder.lin_out.") {
                var.set(&(var.as_tensor() * scale)?)?;
            }
        }
        Ok(())
    }

    /// Trainable variables sorted by name.
    pub fn named_vars(&self) -> Vec<(String, candle_core::Var)> {
        let data = self.varmap.data().lock().unwrap_or_else(|p| p.into_inner());
        let mut vars: Vec<_> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars
    }

    pub fn num_parameters(&self) -> usize {
        self.named_vars().iter().map(|(_, v)| v.elem_count()).sum()
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }
    pub fn codebook(&self) -> &Codebook {
        &self.codebook
    }
    pub fn quantizer(&self) -> &SaqQuantizer {
        &self.quantizer
    }
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }
    pub fn device(&self) -> &Device {
        &self.device
    }

    fn check_images(&self, images: &Tensor) -> Result<usize> {
        let (b, c, h, w) = images.dims4()?;
        let s = self.cfg.image_size;
        if c != self.cfg.in_channels || h != s || w != s {
            return Err(SpaeError::Config(format!(
                "images are {c}x{h}x{w}, this model takes {}x{s}x{s}",
                self.cfg.in_channels
            )));
        }
        Ok(b)
    }

    /// Attach the frozen network named by `ModelConfig::backbone`; its features must have
    /// the configured width and input side. The caller checks that its weights are the file
    /// the config names by sha256.
    pub fn attach_backbone(&mut self, net: Arc<MobileNetV2>) -> Result<()> {
        let Some(b) = &self.cfg.backbone else {
            return Err(SpaeError::Config(
                "this model reads no backbone features".into(),
            ));
        };
        net.check_gives(b.feature_dim, b.input_size, "the encoder")?;
        self.backbone = Some(net);
        Ok(())
    }

    /// The attached backbone's pooled features of `images` (B, F), or `None` when the model
    /// reads none; an error when it reads them and none is attached.
    pub fn backbone_features(&self, images: &Tensor) -> Result<Option<Tensor>> {
        match (&self.cfg.backbone, &self.backbone) {
            (None, _) => Ok(None),
            (Some(_), Some(net)) => Ok(Some(net.features(images)?.to_device(&self.device)?)),
            (Some(b), None) => Err(SpaeError::Config(format!(
                "this model's encoder reads MobileNetV2 features (weights sha256 {}), and no \
                 backbone is attached",
                b.weights_sha256
            ))),
        }
    }

    /// Attach the teacher named by `ModelConfig::prior`; it must score every codebook entry.
    /// The caller checks that it is the teacher the config names.
    pub fn attach_prior(&mut self, scorer: Arc<dyn SemanticScorer>) -> Result<()> {
        if self.cfg.prior.is_none() {
            return Err(SpaeError::Config(
                "this model's encoder reads no teacher prior".into(),
            ));
        }
        if scorer.entries() != self.codebook.len() {
            return Err(SpaeError::Config(format!(
                "the teacher scores {} entries, the codebook has {}",
                scorer.entries(),
                self.codebook.len()
            )));
        }
        self.prior = Some(scorer);
        Ok(())
    }

    /// The attached teacher's prior for `images` (B, d): the codebook rows weighted by the
    /// softmax of its relevance over temperature (`ModelConfig::prior`); `None` when the model
    /// reads none, an error when it reads one and no teacher is attached.
    pub fn prior_embeddings(&self, images: &Tensor) -> Result<Option<Tensor>> {
        let Some(p) = &self.cfg.prior else {
            return Ok(None);
        };
        let Some(scorer) = &self.prior else {
            return Err(SpaeError::Config(format!(
                "this model's encoder reads the prior of the teacher {:?}, and none is attached",
                p.scorer
            )));
        };
        // Teachers run on the CPU (`spae-eval`'s loader), whatever device the model is on.
        let rel = scorer
            .relevance(&images.to_device(&Device::Cpu)?)?
            .to_dtype(DType::F32)?;
        let weights = candle_nn::ops::softmax_last_dim(&(rel / p.temperature)?)?;
        let rows = self.codebook.embeddings();
        Ok(Some(
            weights
                .to_device(rows.device())?
                .matmul(rows)?
                .to_device(&self.device)?,
        ))
    }

    /// Everything the encoder reads from frozen networks for `images`.
    pub fn frozen_inputs(&self, images: &Tensor) -> Result<FrozenInputs> {
        Ok(FrozenInputs {
            features: self.backbone_features(images)?,
            prior: self.prior_embeddings(images)?,
        })
    }

    /// Images (B, C, S, S) in [0, 1] -> grid z (B, G, G, d).
    pub fn encode(&self, images: &Tensor) -> Result<Tensor> {
        let frozen = self.frozen_inputs(images)?;
        self.encode_with(images, &frozen)
    }

    /// [`SpaeModel::encode`] with what the frozen networks read of `images` already computed
    /// (a training run keeps them per image instead of running those networks every step,
    /// [`crate::Trainer::step_with_frozen`]).
    pub fn encode_with(&self, images: &Tensor, frozen: &FrozenInputs) -> Result<Tensor> {
        let b = self.check_images(images)?;
        let features = frozen.features.as_ref();
        let pad = self.cfg.canvas() - self.cfg.image_size;
        let (lo, hi) = (pad / 2, pad - pad / 2);
        let x = images
            .to_device(&self.device)?
            .to_dtype(DType::F32)?
            .pad_with_zeros(2, lo, hi)?
            .pad_with_zeros(3, lo, hi)?;
        let z = match &self.encoder {
            // (b, d, g, g) -> (b, g, g, d)
            AnyEncoder::Conv(e) => e.forward(&x)?.permute((0, 2, 3, 1))?.contiguous()?,
            AnyEncoder::Patch(e) => e.forward_with(&x, features)?,
        };
        match (&self.cfg.prior, &frozen.prior) {
            (Some(_), Some(p)) => {
                let d = self.cfg.embed_dim;
                if p.dims() != [b, d] {
                    return Err(SpaeError::Config(format!(
                        "the prior is {:?}, the encoder needs ({b}, {d})",
                        p.dims()
                    )));
                }
                Ok(z.broadcast_add(&p.to_device(&self.device)?.reshape((b, 1, 1, d))?)?)
            }
            (Some(_), None) => Err(SpaeError::Config(
                "this encoder reads a teacher prior, and none was given".into(),
            )),
            (None, Some(_)) => Err(SpaeError::Config(
                "a teacher prior given to an encoder without one".into(),
            )),
            (None, None) => Ok(z),
        }
    }

    /// Grid zhat (B, G, G, d) -> images (B, C, S, S), not clamped.
    pub fn decode(&self, zhat: &Tensor) -> Result<Tensor> {
        let y = match &self.decoder {
            // (b, g, g, d) -> (b, d, g, g)
            AnyDecoder::Conv(d) => d.forward(&zhat.permute((0, 3, 1, 2))?.contiguous()?)?,
            AnyDecoder::Patch(d) => d.forward(zhat)?,
        };
        let lo = (self.cfg.canvas() - self.cfg.image_size) / 2;
        let s = self.cfg.image_size;
        Ok(y.narrow(2, lo, s)?.narrow(3, lo, s)?)
    }

    /// Encode and quantize into the first `depth` layers.
    pub fn quantize(&self, images: &Tensor, depth: usize) -> Result<Quantized> {
        let z = self.encode(images)?;
        self.quantizer.quantize(&z, &self.codebook, depth)
    }

    /// Images -> one token pyramid of `depth` layers per image.
    pub fn tokenize(&self, images: &Tensor, depth: usize) -> Result<Vec<TokenPyramid>> {
        let q = self.quantize(images, depth)?;
        let b = images.dims()[0];
        let per_layer: Vec<Vec<Vec<u32>>> = q
            .indices
            .iter()
            .map(|t| t.flatten_from(1)?.to_vec2::<u32>())
            .collect::<candle_core::Result<_>>()?;
        Ok((0..b)
            .map(|i| TokenPyramid {
                layers: per_layer
                    .iter()
                    .enumerate()
                    .map(|(l, rows)| {
                        layer_from_indices(self.cfg.pyramid.side(l), &rows[i], &self.codebook)
                    })
                    .collect(),
            })
            .collect())
    }

    /// Token pyramids (all of one depth) -> images (B, C, S, S) clamped to [0, 1].
    pub fn detokenize(&self, pyramids: &[TokenPyramid]) -> Result<Tensor> {
        let depth = pyramids
            .first()
            .map(TokenPyramid::depth)
            .ok_or_else(|| SpaeError::Tokens("no token pyramids to decode".into()))?;
        self.cfg.pyramid.check_depth(depth)?;
        let v = self.codebook.len() as u32;
        let mut indices = Vec::with_capacity(depth);
        for l in 0..depth {
            let s = self.cfg.pyramid.side(l);
            let mut flat = Vec::with_capacity(pyramids.len() * s * s);
            for (i, p) in pyramids.iter().enumerate() {
                let layer = p
                    .layers
                    .get(l)
                    .filter(|_| p.depth() == depth)
                    .ok_or_else(|| {
                        SpaeError::Tokens(format!(
                            "pyramid {} has {} layers, expected {depth}",
                            i + 1,
                            p.depth()
                        ))
                    })?;
                if layer.indices.len() != s * s {
                    return Err(SpaeError::Tokens(format!(
                        "pyramid {}, layer {}: {} tokens, expected {}",
                        i + 1,
                        l + 1,
                        layer.indices.len(),
                        s * s
                    )));
                }
                if let Some(bad) = layer.indices.iter().find(|&&x| x >= v) {
                    return Err(SpaeError::Tokens(format!(
                        "pyramid {}, layer {}: index {bad} is outside the codebook ({v} entries)",
                        i + 1,
                        l + 1
                    )));
                }
                flat.extend_from_slice(&layer.indices);
            }
            indices.push(Tensor::from_vec(
                flat,
                (pyramids.len(), s, s),
                &self.device,
            )?);
        }
        let layers = self.quantizer.dequantize_layers(&indices, &self.codebook)?;
        let input = self.decoder_input_from_layers(&layers, None)?;
        Ok(self.decode(&input)?.clamp(0f32, 1f32)?)
    }

    /// Images -> tokens of `depth` layers -> images, clamped to [0, 1].
    pub fn reconstruct(&self, images: &Tensor, depth: usize) -> Result<Tensor> {
        let q = self.quantize(images, depth)?;
        Ok(self
            .decode(&self.decoder_input(&q, depth, None)?)?
            .clamp(0f32, 1f32)?)
    }

    /// What the decoder reads at `depth` (`ModelConfig::decoder_input`): zhat_depth, or the
    /// first `depth` layers' embeddings side by side in the pyramid's slots, scaled like zhat.
    /// `z` (the encoder's grid) adds the straight-through estimator's z - sg(z) to every word
    /// that is present, so training passes the decoder's gradient on to the encoder.
    pub fn decoder_input(&self, q: &Quantized, depth: usize, z: Option<&Tensor>) -> Result<Tensor> {
        self.cfg.pyramid.check_depth(depth)?;
        if depth > q.recon.len() {
            return Err(SpaeError::Config(format!(
                "decoding depth {depth}, but only {} layers were quantized",
                q.recon.len()
            )));
        }
        match self.cfg.decoder_input {
            DecoderInput::Mean => match z {
                Some(z) => straight_through(z, &q.recon[depth - 1]),
                None => Ok(q.recon[depth - 1].clone()),
            },
            DecoderInput::Layers => self.decoder_input_from_layers(&q.layers[..depth], z),
        }
    }

    /// [`SpaeModel::decoder_input`] from per-layer embeddings (`Quantized::layers`).
    fn decoder_input_from_layers(&self, layers: &[Tensor], z: Option<&Tensor>) -> Result<Tensor> {
        let depth = layers.len();
        self.cfg.pyramid.check_depth(depth)?;
        if self.cfg.decoder_input == DecoderInput::Mean {
            let zhat = self.quantizer.recon_from_layers(layers)?;
            return match z {
                Some(z) => straight_through(z, &zhat),
                None => Ok(zhat),
            };
        }
        let delta = z.map(|z| z - z.detach()).transpose()?;
        let mut slots = Vec::with_capacity(self.cfg.pyramid.depth());
        for e in layers {
            let e = match &delta {
                Some(d) => (e + d)?,
                None => e.clone(),
            };
            slots.push(self.quantizer.finish(&e, depth)?);
        }
        let zeros = layers[0].zeros_like()?;
        slots.resize(self.cfg.pyramid.depth(), zeros);
        Ok(Tensor::cat(&slots, 3)?)
    }

    /// This model grown to `to`, which starts out decoding every token pyramid to exactly the
    /// same image; encoder, codebook and the words of every existing layer are untouched. `to`
    /// may differ from this model's config only in more pyramid layers after the existing ones
    /// (SAQ quantizes layer l from z and layers 1..l-1 alone, so later layers change no earlier
    /// word), in more decoder blocks, and in what the decoder reads (mean -> layers):
    /// - mean -> layers: a `Layers` slot holds E_l / l, and the mean decoder's first weight W
    ///   in every slot gives W (E_1 + ... + E_l) / l = W zhat_l;
    /// - a new residual block x + conv2(silu(conv1(silu(x)))) starts with conv2 at zero, the
    ///   identity, and learns from there (conv1 keeps its fresh initialisation, so conv2's
    ///   gradient is not zero).
    pub fn grow_decoder(&self, to: &ModelConfig) -> Result<SpaeModel> {
        let bad = |m: String| Err(SpaeError::Config(m));
        let (Some(old_p), Some(new_p)) = (&self.cfg.patch, &to.patch) else {
            return bad("only the patch decoder grows".into());
        };
        let p_old = &self.cfg.pyramid;
        let p_new = &to.pyramid;
        if p_new.grid != p_old.grid || !p_new.layers.starts_with(&p_old.layers) {
            return bad(format!(
                "pyramid {:?} does not extend {:?} on the same {}x{} grid",
                p_new.layers, p_old.layers, p_old.grid, p_old.grid
            ));
        }
        let same_but_decoder = ModelConfig {
            decoder_input: self.cfg.decoder_input,
            pyramid: p_old.clone(),
            patch: Some(crate::patch::PatchConfig {
                dec_blocks: old_p.dec_blocks,
                fine_blocks: old_p.fine_blocks,
                ..new_p.clone()
            }),
            ..to.clone()
        };
        if same_but_decoder != self.cfg {
            return bad(
                "a grown model keeps every setting but the pyramid's added layers, the decoder's \
                 block counts and its input"
                    .into(),
            );
        }
        if new_p.dec_blocks < old_p.dec_blocks || new_p.fine_blocks < old_p.fine_blocks {
            return bad(format!(
                "decoder blocks {}+{} cannot shrink to {}+{}",
                old_p.dec_blocks, old_p.fine_blocks, new_p.dec_blocks, new_p.fine_blocks
            ));
        }
        let tile = match (self.cfg.decoder_input, to.decoder_input) {
            (DecoderInput::Mean, DecoderInput::Layers) => p_new.depth(),
            (DecoderInput::Mean, DecoderInput::Mean) => 1,
            (DecoderInput::Layers, DecoderInput::Layers) if p_new.depth() == p_old.depth() => 1,
            (a, b) => {
                return bad(format!(
                    "a {a:?} decoder of {} layers cannot become a {b:?} one of {}",
                    p_old.depth(),
                    p_new.depth()
                ))
            }
        };
        if *to == self.cfg {
            return bad("the decoder is already this size".into());
        }
        let mut model = SpaeModel::new(to.clone(), (*self.codebook).clone(), &self.device)?;
        model.backbone = self.backbone.clone();
        model.prior = self.prior.clone();
        let old: std::collections::HashMap<String, candle_core::Var> =
            self.named_vars().into_iter().collect();
        for (name, var) in model.named_vars() {
            let value = match old.get(&name) {
                Some(src) if name == "decoder.lin_in.weight" => {
                    Tensor::cat(&vec![src.as_tensor().clone(); tile], 1)?
                }
                Some(src) => src.as_tensor().clone(),
                None if name.contains(".conv2.") => var.as_tensor().zeros_like()?,
                None => continue,
            };
            if value.dims() != var.dims() {
                return bad(format!(
                    "{name}: {:?} does not fit {:?}",
                    value.dims(),
                    var.dims()
                ));
            }
            var.set(&value)?;
        }
        Ok(model)
    }

    /// [`SpaeModel::grow_decoder`] to the same model reading `input`.
    pub fn with_decoder_input(&self, input: DecoderInput) -> Result<SpaeModel> {
        self.grow_decoder(&ModelConfig {
            decoder_input: input,
            ..self.cfg.clone()
        })
    }
}

/// A tiny seedable generator (SplitMix64), so initial weights do not depend on a
/// platform RNG (candle's CPU device cannot be seeded).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    /// Standard normal by Box-Muller.
    fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}
