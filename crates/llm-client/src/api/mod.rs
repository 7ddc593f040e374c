//! API backends: OpenAI, any OpenAI-compatible server (vLLM, llama.cpp, TGI, `spae-icl serve`)
//! and Gemini, behind `LanguageModel`.
//!
//! Every backend shares `HttpClient`: timeouts, retries with exponential backoff and jitter
//! (honouring `Retry-After`), a limit on requests in flight, an optional requests-per-minute
//! limit, and the usage (tokens) summed over a run. Keys come from the environment and live
//! only in a header marked sensitive: they are never logged, cached or written to results.

mod gemini;
mod http;
mod openai;

use std::time::Duration;

use serde::Serialize;

pub use gemini::GeminiModel;
pub use http::HttpClient;
pub use openai::{OpenAiEndpoint, OpenAiModel};

use crate::error::{LlmError, Result};
use crate::name::ModelSpec;
use crate::LanguageModel;

/// When and how often a failed request is tried again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (429, 5xx, timeouts, connection failures only).
    pub max_retries: u32,
    /// Backoff before the first retry; it doubles with each retry up to `max_backoff`, and a
    /// random factor in [0.5, 1] spreads clients that failed together.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// A server's `Retry-After` is honoured up to this.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 6,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(120),
        }
    }
}

/// How API models are reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiOptions {
    pub connect_timeout: Duration,
    /// For the whole request, response body included.
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
    /// Requests in flight at once, per model.
    pub max_in_flight: usize,
    /// Spread requests to at most this many a minute.
    pub requests_per_minute: Option<u32>,
    /// Read the key from this variable instead of `OPENAI_API_KEY` / `GEMINI_API_KEY`.
    pub api_key_env: Option<String>,
    /// Replace the default base URL of `openai:` or `gemini:` (a proxy, or a test server).
    pub base_url: Option<String>,
    /// What `context_length` reports (APIs do not say); a guess per backend otherwise.
    pub context_length: Option<usize>,
    /// Gemini's `topK` (no other backend has it here).
    pub top_k: Option<u32>,
    /// Gemini's `candidateCount`: `GeminiModel::generate_candidates` returns that many;
    /// `generate` the first.
    pub candidate_count: u32,
    /// Which endpoint `generate` uses on `openai:` (chat models cannot continue raw text);
    /// by default completions for `*-instruct`, `davinci-*` and `babbage-*`, chat otherwise.
    /// `openai-compatible:` always uses completions unless this says otherwise.
    pub openai_endpoint: Option<OpenAiEndpoint>,
}

impl Default for ApiOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(300),
            retry: RetryPolicy::default(),
            max_in_flight: 16,
            requests_per_minute: None,
            api_key_env: None,
            base_url: None,
            context_length: None,
            top_k: None,
            candidate_count: 1,
            openai_endpoint: None,
        }
    }
}

/// Tokens billed so far, summed over every request of a model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Requests answered (retries not counted twice).
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// An API key. It has no `Display`, and `Debug` hides it.
#[derive(Clone)]
pub struct ApiKey(String);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl ApiKey {
    /// The key in `var`, if set and not empty.
    pub fn from_env(var: &str) -> Option<Self> {
        std::env::var(var)
            .ok()
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty())
            .map(ApiKey)
    }

    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into())
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

/// The key for a backend whose usual variable is `default_var`; `required` makes a missing
/// key an error (an OpenAI-compatible server on the local network often needs none).
fn key_for(
    spec: &ModelSpec,
    options: &ApiOptions,
    default_var: &str,
    required: bool,
) -> Result<Option<ApiKey>> {
    let var = options.api_key_env.as_deref().unwrap_or(default_var);
    match ApiKey::from_env(var) {
        Some(key) => Ok(Some(key)),
        None if required => Err(LlmError::MissingApiKey {
            name: spec.to_string(),
            var: var.to_string(),
        }),
        None => Ok(None),
    }
}

/// Build the API model `spec` names.
pub fn load(spec: &ModelSpec, options: &ApiOptions) -> Result<Box<dyn LanguageModel>> {
    Ok(match spec {
        ModelSpec::OpenAi { .. } => {
            let key = key_for(spec, options, "OPENAI_API_KEY", true)?;
            Box::new(OpenAiModel::new(spec, key, options)?)
        }
        ModelSpec::OpenAiCompatible { .. } => {
            let key = key_for(spec, options, "OPENAI_API_KEY", false)?;
            Box::new(OpenAiModel::new(spec, key, options)?)
        }
        ModelSpec::Gemini { .. } => {
            let key = key_for(spec, options, "GEMINI_API_KEY", true)?;
            Box::new(GeminiModel::new(spec, key, options)?)
        }
        other => {
            return Err(LlmError::BadModelName {
                name: other.to_string(),
                reason: "not an API model".into(),
            })
        }
    })
}
