use std::path::PathBuf;

/// Everything that can go wrong in spae-core. Messages name the file or the value at fault.
#[derive(Debug, thiserror::Error)]
pub enum SpaeError {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Vocab { path: PathBuf, reason: String },
    #[error("{path}: no vocabulary entry survives the filter {filter}")]
    EmptyCodebook { path: PathBuf, filter: String },
    #[error("invalid pyramid: {0}")]
    Pyramid(String),
    #[error("invalid model config: {0}")]
    Config(String),
    #[error("{path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
    #[error("{path}: cannot read image: {reason}")]
    Image { path: PathBuf, reason: String },
    #[error("tokens: {0}")]
    Tokens(String),
    #[error("{path}: {reason}")]
    Scorer { path: PathBuf, reason: String },
    /// A digit judge's file that cannot be read as one.
    #[error("{path}: {reason}")]
    JudgeFile { path: PathBuf, reason: String },
    /// Images or settings a digit judge cannot work with.
    #[error("judge: {0}")]
    Judge(String),
    /// Pixels and labels that do not describe a set of images.
    #[error("images: {0}")]
    Images(String),
}

pub type Result<T> = std::result::Result<T, SpaeError>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> SpaeError {
    let path = path.into();
    move |source| SpaeError::Io { path, source }
}
