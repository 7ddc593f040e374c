//! The frozen language codebook (SPAE paper, Sec. 3.1).
//!
//! Entries are vocabulary entries of one LLM: its token id, its surface string (with the
//! tokenizer's word-start marker) and its input-embedding row. The codebook is never
//! trained: the encoder learns to land near words the LLM already knows.

mod filter;
mod project;
mod source;

pub use filter::{Dictionary, VocabFilter, WordMarker};
pub use project::Projection;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::{Result, SpaeError};

/// Where a codebook's words and rows came from; stored in checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CodebookInfo {
    /// The LLM vocabulary it was read from (file name or catalog name).
    pub source: String,
    pub marker: WordMarker,
    pub filter: VocabFilter,
    /// Vocabulary size of the LLM before filtering.
    pub vocab_size: usize,
    /// How the rows were derived from the LLM's embedding rows; `None`: they are the rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projection: Option<Projection>,
}

/// A frozen codebook: token ids, surface strings and embedding rows of kept entries.
#[derive(Clone)]
pub struct Codebook {
    info: CodebookInfo,
    token_ids: Vec<u32>,
    pieces: Vec<String>,
    /// (V, d) f32.
    embeddings: Tensor,
    /// (V,) f32: squared L2 norm of each row, for nearest-neighbour search.
    sq_norms: Tensor,
    /// (d + 1, V) f32: the rows times -2, then a row of squared norms, transposed and
    /// contiguous, so `[q, 1] @ this` is ||e||^2 - 2 q.e in one matmul (see
    /// [`crate::quantizer::nearest`]).
    search: Tensor,
    /// word (without marker) -> entry index; and its lowercase form.
    by_word: HashMap<String, usize>,
    by_lower: HashMap<String, usize>,
}

impl std::fmt::Debug for Codebook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codebook")
            .field("source", &self.info.source)
            .field("entries", &self.len())
            .field("dim", &self.dim())
            .finish()
    }
}

impl Codebook {
    /// Build from parts. `embeddings` is (V, d) with one row per entry.
    pub fn new(
        info: CodebookInfo,
        token_ids: Vec<u32>,
        pieces: Vec<String>,
        embeddings: Tensor,
    ) -> Result<Self> {
        let (v, _d) = embeddings.dims2()?;
        if token_ids.len() != v || pieces.len() != v {
            return Err(SpaeError::Config(format!(
                "codebook has {} ids and {} strings for {v} embedding rows",
                token_ids.len(),
                pieces.len()
            )));
        }
        if v == 0 {
            return Err(SpaeError::Config("codebook has no entries".into()));
        }
        let embeddings = embeddings.to_dtype(DType::F32)?;
        let sq_norms = embeddings.sqr()?.sum(1)?;
        let search = Tensor::cat(&[(&embeddings * -2.0)?, sq_norms.unsqueeze(1)?], 1)?
            .t()?
            .contiguous()?;
        let mut by_word = HashMap::with_capacity(v);
        let mut by_lower = HashMap::with_capacity(v);
        for (i, p) in pieces.iter().enumerate() {
            let w = info.marker.strip(p);
            by_word.entry(w.to_string()).or_insert(i);
            by_lower.entry(w.to_lowercase()).or_insert(i);
        }
        Ok(Self {
            info,
            token_ids,
            pieces,
            embeddings,
            sq_norms,
            search,
            by_word,
            by_lower,
        })
    }

    /// Read the vocabulary and the (dequantized) `token_embd.weight` of a GGUF file.
    pub fn from_gguf(path: &Path, filter: &VocabFilter, device: &Device) -> Result<Self> {
        source::from_gguf(path, filter, device)
    }

    /// Read `tokenizer.json` and the input-embedding table from HF safetensors in `dir`.
    pub fn from_hf_dir(dir: &Path, filter: &VocabFilter, device: &Device) -> Result<Self> {
        source::from_hf_dir(dir, filter, device)
    }

    pub fn info(&self) -> &CodebookInfo {
        &self.info
    }
    pub fn len(&self) -> usize {
        self.token_ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.token_ids.is_empty()
    }
    /// Embedding dimension d.
    pub fn dim(&self) -> usize {
        self.embeddings.dims()[1]
    }
    pub fn embeddings(&self) -> &Tensor {
        &self.embeddings
    }
    pub fn sq_norms(&self) -> &Tensor {
        &self.sq_norms
    }
    /// (d + 1, V): `[q, 1] @ search_matrix()` = ||e||^2 - 2 q.e for every entry.
    pub fn search_matrix(&self) -> &Tensor {
        &self.search
    }
    pub fn token_ids(&self) -> &[u32] {
        &self.token_ids
    }
    /// Surface strings, with the tokenizer's word-start marker (`▁cat`, `Ġcat`).
    pub fn pieces(&self) -> &[String] {
        &self.pieces
    }
    /// Entry `i` as a plain word (`cat`).
    pub fn word(&self, i: usize) -> &str {
        self.info.marker.strip(&self.pieces[i])
    }
    /// The entry whose word is `word`: exact match first, then case-insensitive.
    pub fn index_of_word(&self, word: &str) -> Option<usize> {
        let w = self.info.marker.strip(word);
        self.by_word
            .get(w)
            .or_else(|| self.by_lower.get(&w.to_lowercase()))
            .copied()
    }

    pub fn to_device(&self, device: &Device) -> Result<Self> {
        Ok(Self {
            embeddings: self.embeddings.to_device(device)?,
            sq_norms: self.sq_norms.to_device(device)?,
            search: self.search.to_device(device)?,
            ..self.clone()
        })
    }
}
