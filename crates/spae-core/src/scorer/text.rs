//! Sentence embeddings from a BERT-family encoder (all-MiniLM-L6-v2): candle-transformers
//! `bert`, mean pooling over real tokens, L2 normalisation (the sentence-transformers recipe).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, Tokenizer};

use crate::{io_err, Result, SpaeError};

fn text_err(path: &Path, reason: impl std::fmt::Display) -> SpaeError {
    SpaeError::Scorer {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// A frozen sentence encoder.
pub struct SentenceEncoder {
    model: BertModel,
    tokenizer: Tokenizer,
    dim: usize,
    device: Device,
    /// What it was loaded from (weights file), for cache keys and messages.
    source: PathBuf,
}

impl std::fmt::Debug for SentenceEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentenceEncoder")
            .field("source", &self.source)
            .field("dim", &self.dim)
            .finish()
    }
}

/// Sentences per forward pass.
const BATCH: usize = 256;

impl SentenceEncoder {
    /// Load from a BERT `config.json`, `tokenizer.json` and `model.safetensors`.
    pub fn load(config: &Path, tokenizer: &Path, weights: &Path, device: &Device) -> Result<Self> {
        let text = std::fs::read_to_string(config).map_err(io_err(config))?;
        let cfg: Config = serde_json::from_str(&text).map_err(|e| text_err(config, e))?;
        let mut tokenizer = Tokenizer::from_file(tokenizer).map_err(|e| text_err(tokenizer, e))?;
        tokenizer.with_padding(Some(PaddingParams::default()));
        // SAFETY: the weights file is mapped read-only; the cache never rewrites a file in place.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, device) }
            .map_err(|e| text_err(weights, e))?;
        let model = BertModel::load(vb, &cfg).map_err(|e| text_err(weights, e))?;
        Ok(Self {
            model,
            tokenizer,
            dim: cfg.hidden_size,
            device: device.clone(),
            source: weights.to_path_buf(),
        })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Unit-norm embeddings (N, dim) of `texts`.
    pub fn embed(&self, texts: &[&str]) -> Result<Tensor> {
        let mut parts = Vec::new();
        for chunk in texts.chunks(BATCH) {
            parts.push(self.embed_batch(chunk)?);
        }
        if parts.is_empty() {
            return Ok(Tensor::zeros((0, self.dim), DType::F32, &self.device)?);
        }
        Ok(Tensor::cat(&parts, 0)?)
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Tensor> {
        let enc = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| text_err(&self.source, e))?;
        let n = enc.len();
        let len = enc.first().map_or(0, |e| e.get_ids().len());
        let ids: Vec<u32> = enc.iter().flat_map(|e| e.get_ids().to_vec()).collect();
        let mask: Vec<u32> = enc
            .iter()
            .flat_map(|e| e.get_attention_mask().to_vec())
            .collect();
        let ids = Tensor::from_vec(ids, (n, len), &self.device)?;
        let mask = Tensor::from_vec(mask, (n, len), &self.device)?;
        let hidden = self.model.forward(&ids, &ids.zeros_like()?, Some(&mask))?; // (n, len, dim)
                                                                                 // Mean over real tokens only.
        let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let sum = hidden.broadcast_mul(&m)?.sum(1)?;
        let count = m.sum(1)?.clamp(1e-9, f64::MAX)?;
        let mean = sum.broadcast_div(&count)?;
        l2_normalize(&mean)
    }
}

/// Rows scaled to unit L2 norm.
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let n = x.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
    Ok(x.broadcast_div(&n)?)
}
