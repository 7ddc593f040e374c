//! Real CLIP (Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
//! Supervision") as a scorer, for users who have weights: an HF-layout directory with
//! `config.json`, `tokenizer.json` and `model.safetensors`, run by candle-transformers `clip`.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::clip::text_model::{Activation, ClipTextConfig};
use candle_transformers::models::clip::vision_model::ClipVisionConfig;
use candle_transformers::models::clip::{ClipConfig, ClipModel};
use serde::Deserialize;
use tokenizers::{PaddingParams, Tokenizer};

use super::text::l2_normalize;
use super::ImageTextModel;
use crate::{io_err, Result, SpaeError};

/// CLIP's image normalisation (the values of its preprocessing).
const MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
const STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// `config.json` of an HF CLIP checkpoint (the fields the model needs).
#[derive(Debug, Deserialize)]
struct RawConfig {
    text_config: RawText,
    vision_config: RawVision,
    projection_dim: usize,
    #[serde(default = "default_logit_scale")]
    logit_scale_init_value: f32,
}

fn default_logit_scale() -> f32 {
    2.6592
}

#[derive(Debug, Deserialize)]
struct RawText {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    max_position_embeddings: usize,
}

#[derive(Debug, Deserialize)]
struct RawVision {
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    image_size: usize,
    patch_size: usize,
    #[serde(default = "three")]
    num_channels: usize,
}

fn three() -> usize {
    3
}

fn clip_err(path: &Path, reason: impl std::fmt::Display) -> SpaeError {
    SpaeError::Scorer {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Real CLIP weights as an [`ImageTextModel`].
pub struct ClipScorer {
    model: ClipModel,
    tokenizer: Tokenizer,
    image_size: usize,
    max_len: usize,
    device: Device,
    id: String,
}

impl ClipScorer {
    /// Load `dir/config.json`, `dir/tokenizer.json`, `dir/model.safetensors`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(io_err(&cfg_path))?;
        let raw: RawConfig = serde_json::from_str(&text).map_err(|e| clip_err(&cfg_path, e))?;
        let cfg = ClipConfig {
            text_config: ClipTextConfig {
                vocab_size: raw.text_config.vocab_size,
                embed_dim: raw.text_config.hidden_size,
                activation: Activation::QuickGelu,
                intermediate_size: raw.text_config.intermediate_size,
                max_position_embeddings: raw.text_config.max_position_embeddings,
                pad_with: None,
                num_hidden_layers: raw.text_config.num_hidden_layers,
                num_attention_heads: raw.text_config.num_attention_heads,
                projection_dim: raw.projection_dim,
            },
            vision_config: ClipVisionConfig {
                embed_dim: raw.vision_config.hidden_size,
                activation: Activation::QuickGelu,
                intermediate_size: raw.vision_config.intermediate_size,
                num_hidden_layers: raw.vision_config.num_hidden_layers,
                num_attention_heads: raw.vision_config.num_attention_heads,
                projection_dim: raw.projection_dim,
                num_channels: raw.vision_config.num_channels,
                image_size: raw.vision_config.image_size,
                patch_size: raw.vision_config.patch_size,
            },
            logit_scale_init_value: raw.logit_scale_init_value,
            image_size: raw.vision_config.image_size,
        };
        let tok_path = dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&tok_path).map_err(|e| clip_err(&tok_path, e))?;
        tokenizer.with_padding(Some(PaddingParams::default()));
        let weights = dir.join("model.safetensors");
        // SAFETY: mapped read-only; the file is not modified while the model lives.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, device) }
            .map_err(|e| clip_err(&weights, e))?;
        // candle's CLIP draws a random class embedding when the file lacks one: refuse that.
        let class = "vision_model.embeddings.class_embedding";
        if !vb.contains_tensor(class) {
            return Err(clip_err(&weights, format!("missing tensor {class}")));
        }
        let model = ClipModel::new(vb, &cfg).map_err(|e| clip_err(&weights, e))?;
        Ok(Self {
            model,
            tokenizer,
            image_size: cfg.image_size,
            max_len: raw.text_config.max_position_embeddings,
            device: device.clone(),
            id: format!("clip:{}", dir.display()),
        })
    }
}

impl ImageTextModel for ClipScorer {
    fn embed_images(&self, images: &Tensor) -> Result<Tensor> {
        let (_, c, _, _) = images.dims4()?;
        let x = images.to_device(&self.device)?.to_dtype(DType::F32)?;
        // Gray -> RGB, resize to the model's side, then CLIP's normalisation.
        let x = if c == 1 { x.repeat((1, 3, 1, 1))? } else { x };
        let x = x.upsample_nearest2d(self.image_size, self.image_size)?;
        let mean = Tensor::new(&MEAN, &self.device)?.reshape((1, 3, 1, 1))?;
        let std = Tensor::new(&STD, &self.device)?.reshape((1, 3, 1, 1))?;
        let x = x.broadcast_sub(&mean)?.broadcast_div(&std)?;
        l2_normalize(&self.model.get_image_features(&x)?)
    }

    fn embed_texts(&self, texts: &[&str]) -> Result<Tensor> {
        let enc = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| clip_err(Path::new(&self.id), e))?;
        let len = enc
            .first()
            .map_or(0, |e| e.get_ids().len())
            .min(self.max_len);
        let ids: Vec<u32> = enc
            .iter()
            .flat_map(|e| e.get_ids()[..len].to_vec())
            .collect();
        let ids = Tensor::from_vec(ids, (texts.len(), len), &self.device)?;
        l2_normalize(&self.model.get_text_features(&ids)?)
    }

    fn text_model_id(&self) -> String {
        self.id.clone()
    }

    /// CLIP's prompt ("a photo of a {}") and its learned logit scale at the end of training
    /// (100, the cap of Radford et al. 2021).
    fn zero_shot(&self) -> super::ZeroShotQuery {
        super::ZeroShotQuery {
            captions: super::tower::Captions::Labels,
            logit_scale: 100.0,
        }
    }
}
