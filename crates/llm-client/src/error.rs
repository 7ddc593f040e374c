//! The one error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong naming, loading or running a language model.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("model name {name:?}: {reason}")]
    BadModelName { name: String, reason: String },

    #[error("model {name}: the {backend} backend is not built yet")]
    BackendNotBuilt { name: String, backend: &'static str },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: {what}")]
    Gguf { path: PathBuf, what: String },

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    #[error("token id {id} is outside the vocabulary of {vocab} tokens")]
    TokenOutOfRange { id: u32, vocab: usize },

    #[error("{needed} tokens do not fit the context of {context} tokens")]
    ContextOverflow { needed: usize, context: usize },

    #[error("invalid parameter: {0}")]
    InvalidParams(String),

    #[error("the prompt is empty")]
    EmptyPrompt,

    #[error(transparent)]
    Asset(#[from] spae_assets::AssetError),

    #[error("tensor: {0}")]
    Tensor(#[from] candle_core::Error),

    #[error("model state lock poisoned by an earlier panic")]
    Poisoned,
}

pub type Result<T> = std::result::Result<T, LlmError>;
