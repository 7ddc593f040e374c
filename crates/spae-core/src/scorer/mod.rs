//! Semantic relevance of codebook entries to images (semantic guidance with CLIP relevance,
//! SPAE paper Sec. 3.1).
//!
//! A [`SemanticScorer`] gives every image a relevance to every codebook entry. Both scorers
//! here are CLIP-shaped: an image embedding and a text embedding in one space, relevance =
//! cosine(image, text of the entry's word):
//! - [`clip::ClipModel`]: real CLIP weights a user has (HF layout), via candle-transformers;
//! - [`tower::ImageTower`] + [`text::SentenceEncoder`]: a small CNN trained here against a
//!   frozen all-MiniLM-L6-v2 on captions made from labels (no CLIP weights can be had offline).

pub mod clip;
pub mod text;
pub mod tower;
pub mod training;

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::{io_err, Codebook, Result};

/// Relevance of every codebook entry to each image.
pub trait SemanticScorer {
    /// Images (B, C, S, S) in [0, 1] -> relevance (B, V), higher = more relevant.
    fn relevance(&self, images: &Tensor) -> Result<Tensor>;
    /// Number of entries V scored.
    fn entries(&self) -> usize;
}

/// A model with an image and a text side in one embedding space.
pub trait ImageTextModel {
    /// Unit-norm image embeddings (B, D).
    fn embed_images(&self, images: &Tensor) -> Result<Tensor>;
    /// Unit-norm text embeddings (N, D).
    fn embed_texts(&self, texts: &[&str]) -> Result<Tensor>;
    /// Names the text side, so cached word embeddings are keyed by it.
    fn text_model_id(&self) -> String;
}

/// An [`ImageTextModel`] with the words of one codebook embedded once:
/// relevance(x, k) = cosine(image(x), text(word k)).
pub struct CodebookScorer<M> {
    model: M,
    /// (V, D) unit rows.
    words: Tensor,
}

impl<M: ImageTextModel> CodebookScorer<M> {
    /// Embed the codebook's words (plain, without the word-start marker). With `cache`, the
    /// embeddings are read from / written to that safetensors file, keyed by a hash of the
    /// words and the text model, so the words are embedded once per codebook.
    pub fn new(model: M, codebook: &Codebook, cache: Option<&Path>) -> Result<Self> {
        let words: Vec<&str> = (0..codebook.len()).map(|i| codebook.word(i)).collect();
        let key = word_key(&model.text_model_id(), &words);
        if let Some(path) = cache.filter(|p| p.is_file()) {
            if let Some(t) = read_cached(path, &key, words.len())? {
                return Ok(Self { model, words: t });
            }
        }
        let t = model.embed_texts(&words)?;
        if let Some(path) = cache {
            write_cached(path, &key, &t)?;
        }
        Ok(Self { model, words: t })
    }

    pub fn model(&self) -> &M {
        &self.model
    }

    /// (V, D) unit embeddings of the codebook's words.
    pub fn word_embeddings(&self) -> &Tensor {
        &self.words
    }
}

impl<M: ImageTextModel> SemanticScorer for CodebookScorer<M> {
    fn relevance(&self, images: &Tensor) -> Result<Tensor> {
        let img = self.model.embed_images(images)?;
        Ok(img.matmul(&self.words.t()?)?)
    }
    fn entries(&self) -> usize {
        self.words.dims()[0]
    }
}

/// A stable (FNV-1a, 64-bit) hash of the text model and the words, in hex.
fn word_key(model: &str, words: &[&str]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in model.bytes().chain([0u8]).chain(words.join("\0").bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn read_cached(path: &Path, key: &str, v: usize) -> Result<Option<Tensor>> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let Ok((_, header)) = safetensors::SafeTensors::read_metadata(&bytes) else {
        return Ok(None);
    };
    if header
        .metadata()
        .as_ref()
        .and_then(|m| m.get("spae.words_key"))
        != Some(&key.to_string())
    {
        return Ok(None);
    }
    let map = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)?;
    Ok(map
        .get("words")
        .filter(|t| t.dims().first() == Some(&v))
        .map(|t| t.to_dtype(DType::F32))
        .transpose()?)
}

fn write_cached(path: &Path, key: &str, t: &Tensor) -> Result<()> {
    let meta = std::collections::HashMap::from([("spae.words_key".to_string(), key.to_string())]);
    let tensors =
        std::collections::BTreeMap::from([("words".to_string(), t.to_device(&Device::Cpu)?)]);
    crate::checkpoint::write_atomic(path, &tensors, meta)
}

/// The `k` most relevant entries per row of a relevance matrix (B, V): (indices (B, k) u32,
/// relevances (B, k)), most relevant first.
pub fn top_relevant(relevance: &Tensor, k: usize) -> Result<(Tensor, Tensor)> {
    let k = k.min(relevance.dims()[1]);
    let order = relevance
        .arg_sort_last_dim(false)?
        .narrow(1, 0, k)?
        .contiguous()?;
    let vals = relevance.gather(&order, 1)?;
    Ok((order, vals))
}
