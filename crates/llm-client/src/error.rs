//! The one error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong naming, loading or running a language model.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("model name {name:?}: {reason}")]
    BadModelName { name: String, reason: String },

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

    #[error("model {name}: {what} is not supported by this backend")]
    Unsupported { name: String, what: String },

    #[error(
        "model {name}: set {var} to the API key (or name another variable with --api-key-env)"
    )]
    MissingApiKey { name: String, var: String },

    /// An HTTP error status: a 4xx other than 429 at once, else after the last retry.
    #[error("model {name}: HTTP {status} after {attempts} attempt(s): {message}")]
    Http {
        name: String,
        status: u16,
        attempts: u32,
        message: String,
    },

    #[error("model {name}: no answer within {timeout:?} ({attempts} attempt(s))")]
    Timeout {
        name: String,
        timeout: std::time::Duration,
        attempts: u32,
    },

    /// The connection failed or was reset, on every attempt.
    #[error("model {name}: connection failed after {attempts} attempt(s): {message}")]
    Connection {
        name: String,
        attempts: u32,
        message: String,
    },

    /// The server answered 200 with something that is not the expected JSON.
    #[error("model {name}: unexpected response: {what}")]
    BadResponse { name: String, what: String },

    #[error("response cache {path}: {message}")]
    Cache { path: PathBuf, message: String },
}

pub type Result<T> = std::result::Result<T, LlmError>;
