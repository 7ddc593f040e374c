//! One error type for every evaluation: the errors of the crates below, bad input named with
//! what is wrong, and the context a caller added on the way up (as `anyhow` would print it,
//! "outer: inner", but typed, so the CLI can match on the cause).

use std::fmt::Display;

/// What went wrong in a task, a scoring, a grid or a report.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Core(#[from] spae_core::SpaeError),
    #[error(transparent)]
    Llm(#[from] llm_client::LlmError),
    #[error(transparent)]
    Prompt(#[from] prompt::PromptError),
    #[error(transparent)]
    Data(#[from] spae_datasets::DataError),
    #[error(transparent)]
    Asset(#[from] spae_assets::AssetError),
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Image(#[from] image::ImageError),
    /// A task file that does not parse.
    #[error(transparent)]
    Toml(#[from] toml::de::Error),
    /// No TrueType font for the plots' text.
    #[error(transparent)]
    NoFont(#[from] crate::plot::NoFont),
    /// Input or settings that cannot work, with what is wrong.
    #[error("{0}")]
    Invalid(String),
    /// `source`, with what was being done when it happened.
    #[error("{context}")]
    Context {
        context: String,
        #[source]
        source: Box<EvalError>,
    },
}

pub type Result<T> = std::result::Result<T, EvalError>;

impl EvalError {
    /// The error under every added context.
    pub fn root(&self) -> &EvalError {
        match self {
            EvalError::Context { source, .. } => source.root(),
            other => other,
        }
    }

    pub fn msg(text: impl Display) -> Self {
        EvalError::Invalid(text.to_string())
    }
}

/// `anyhow`-style context on results and options, kept typed.
pub trait Context<T> {
    fn context<C: Display>(self, context: C) -> Result<T>;
    fn with_context<C: Display, F: FnOnce() -> C>(self, f: F) -> Result<T>;
}

impl<T, E: Into<EvalError>> Context<T> for std::result::Result<T, E> {
    fn context<C: Display>(self, context: C) -> Result<T> {
        self.map_err(|e| EvalError::Context {
            context: context.to_string(),
            source: Box::new(e.into()),
        })
    }

    fn with_context<C: Display, F: FnOnce() -> C>(self, f: F) -> Result<T> {
        self.map_err(|e| EvalError::Context {
            context: f().to_string(),
            source: Box::new(e.into()),
        })
    }
}

impl<T> Context<T> for Option<T> {
    fn context<C: Display>(self, context: C) -> Result<T> {
        self.ok_or_else(|| EvalError::Invalid(context.to_string()))
    }

    fn with_context<C: Display, F: FnOnce() -> C>(self, f: F) -> Result<T> {
        self.ok_or_else(|| EvalError::Invalid(f().to_string()))
    }
}

/// Return an [`EvalError::Invalid`] with a formatted message.
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::EvalError::Invalid(format!($($arg)*)))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_prints_outer_then_inner_and_keeps_the_cause() {
        let io: std::result::Result<(), std::io::Error> =
            Err(std::io::Error::new(std::io::ErrorKind::NotFound, "gone"));
        let err = io
            .context("reading x.png")
            .context("episode 3")
            .unwrap_err();
        assert_eq!(err.to_string(), "episode 3");
        let chain: Vec<String> =
            std::iter::successors(Some(&err as &dyn std::error::Error), |e| e.source())
                .map(|e| e.to_string())
                .collect();
        assert_eq!(chain, ["episode 3", "reading x.png", "gone"]);
        assert!(matches!(err.root(), EvalError::Io(_)));
    }
}
