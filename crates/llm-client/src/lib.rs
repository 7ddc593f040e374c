//! One trait for every LLM spae-icl talks to, and the local GGUF backend.
//!
//! SPAE (Yu et al., 2023) writes images as words of a frozen LLM's vocabulary, so a local
//! model must take a prompt as exact token ids (`Prompt::Tokens`) as well as text, and
//! classification is done by scoring candidate continuations (`LanguageModel::score`).
//!
//! ```no_run
//! # async fn demo() -> llm_client::Result<()> {
//! use llm_client::{GenerateParams, LanguageModel, Prompt};
//! let model = llm_client::load("local:gemma3-270m")?;
//! let prompt = Prompt::Text("Q: What is the capital of France?\nA:".into());
//! let answer = model.generate(&prompt, &GenerateParams::greedy(8)).await?;
//! let scores = model.score(&prompt, &[" Paris".into(), " Rome".into()]).await?;
//! # Ok(()) }
//! ```
//!
//! The local backend keeps the KV cache of its previous request and reuses the prefix a new
//! request shares with it, so scoring many queries after one few-shot support set runs the
//! support set once. One `LocalModel` serves one request at a time (a mutex guards its cache).
//!
//! API models (`openai:`, `openai-compatible:`, `gemini:`) live in `api`; `CachedModel` puts
//! a persistent response cache in front of any model; `server` serves a local model over an
//! OpenAI-compatible HTTP API.

pub mod api;
mod chat;
mod error;
pub mod local;
mod name;
mod response_cache;
pub mod server;
pub mod tokenizer;

pub use api::{ApiOptions, Usage};
pub use chat::{ChatMessage, ChatTemplate, Role};
pub use error::{LlmError, Result};
pub use local::{LoadOptions, LocalModel};
pub use name::{KnownModel, ModelSpec};
pub use response_cache::{CacheStats, CachedModel, ResponseCache};

/// What the model is asked to continue.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum Prompt {
    /// Text, tokenized by the model's own tokenizer (a local model adds its BOS token).
    Text(String),
    /// Exact token ids, fed to the model unchanged (no BOS is added).
    Tokens(Vec<u32>),
}

impl From<&str> for Prompt {
    fn from(s: &str) -> Self {
        Prompt::Text(s.to_string())
    }
}

impl From<Vec<u32>> for Prompt {
    fn from(ids: Vec<u32>) -> Self {
        Prompt::Tokens(ids)
    }
}

/// Sampling parameters of `generate`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GenerateParams {
    pub max_tokens: usize,
    /// 0 means greedy (argmax).
    pub temperature: f32,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches `top_p`.
    pub top_p: f32,
    pub seed: u64,
    /// Generation stops once the text contains one of these; the text is cut before it.
    pub stop: Vec<String>,
    /// Only these token ids may be generated (constrained decoding, e.g. to a codebook);
    /// `None`: any. Logprobs stay those of the model's unrestricted distribution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_tokens: Option<Vec<u32>>,
}

impl Default for GenerateParams {
    fn default() -> Self {
        Self {
            max_tokens: 64,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            stop: Vec::new(),
            allowed_tokens: None,
        }
    }
}

impl GenerateParams {
    /// Greedy decoding of at most `max_tokens` tokens.
    pub fn greedy(max_tokens: usize) -> Self {
        Self {
            max_tokens,
            ..Self::default()
        }
    }

    pub fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(LlmError::InvalidParams(format!(
                "temperature must be finite and >= 0, got {}",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(LlmError::InvalidParams(format!(
                "top_p must be in (0, 1], got {}",
                self.top_p
            )));
        }
        Ok(())
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// `max_tokens` reached.
    Length,
    /// One of the stop strings appeared.
    Stop,
    /// The model emitted an end-of-sequence token.
    EndOfSequence,
    /// The context window is full.
    ContextFull,
}

/// The result of `generate`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Completion {
    /// Generated text, cut before a stop string; without the end-of-sequence token.
    pub text: String,
    /// Every generated token id, including an end-of-sequence token and the tokens of a stop string.
    /// Empty from an API, which returns token text, not ids.
    pub tokens: Vec<u32>,
    /// For each of `tokens`, its log-probability under the model's own distribution
    /// (before temperature and top-p), so that their sum is comparable with `score`.
    /// Written as bit patterns so that a cached `-inf` survives JSON.
    #[serde(with = "f32_bits")]
    pub logprobs: Vec<f32>,
    pub finish_reason: FinishReason,
}

/// A language model: local GGUF or an API.
#[async_trait::async_trait]
pub trait LanguageModel: Send + Sync {
    /// The name it was loaded by (`local:gemma3-270m`).
    fn name(&self) -> &str;

    /// The most tokens (prompt plus generation) one request may hold.
    fn context_length(&self) -> usize;

    /// Token ids of `text`, without BOS.
    fn tokenize(&self, text: &str) -> Result<Vec<u32>>;

    /// Text of `ids`; special tokens are written out as their text.
    fn detokenize(&self, ids: &[u32]) -> Result<String>;

    /// The token a text prompt starts with (BOS), for callers that build `Prompt::Tokens`
    /// themselves; `None` where the model adds none or the backend does not say.
    fn bos_token(&self) -> Option<u32> {
        None
    }

    async fn generate(&self, prompt: &Prompt, params: &GenerateParams) -> Result<Completion>;

    /// For each continuation, the total log-probability of its tokens (tokenized alone,
    /// without BOS) following `prompt`.
    async fn score(&self, prompt: &Prompt, continuations: &[String]) -> Result<Vec<f32>>;

    /// Answer a conversation: a local model renders its chat template and generates; an API
    /// uses its chat endpoint.
    async fn chat(&self, messages: &[ChatMessage], params: &GenerateParams) -> Result<Completion> {
        let _ = (messages, params);
        Err(LlmError::Unsupported {
            name: self.name().to_string(),
            what: "chat".into(),
        })
    }

    /// Tokens this model has billed so far (zero for a local model).
    fn usage(&self) -> Usage {
        Usage::default()
    }

    /// For a model computed in this process, a label of the arithmetic that computes it: the
    /// response cache keys answers by it too, so that answers of an earlier implementation
    /// (other kernels, other rounding) are not served as this one's. None for an API.
    fn arithmetic(&self) -> Option<&'static str> {
        None
    }
}

#[async_trait::async_trait]
impl<M: LanguageModel + ?Sized> LanguageModel for Box<M> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn context_length(&self) -> usize {
        (**self).context_length()
    }
    fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        (**self).tokenize(text)
    }
    fn detokenize(&self, ids: &[u32]) -> Result<String> {
        (**self).detokenize(ids)
    }
    fn bos_token(&self) -> Option<u32> {
        (**self).bos_token()
    }
    async fn generate(&self, prompt: &Prompt, params: &GenerateParams) -> Result<Completion> {
        (**self).generate(prompt, params).await
    }
    async fn score(&self, prompt: &Prompt, continuations: &[String]) -> Result<Vec<f32>> {
        (**self).score(prompt, continuations).await
    }
    async fn chat(&self, messages: &[ChatMessage], params: &GenerateParams) -> Result<Completion> {
        (**self).chat(messages, params).await
    }
    fn usage(&self) -> Usage {
        (**self).usage()
    }
    fn arithmetic(&self) -> Option<&'static str> {
        (**self).arithmetic()
    }
}

/// Serialize `f32`s exactly, non-finite ones included (JSON has no `-inf`).
pub(crate) mod f32_bits {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &[f32], s: S) -> std::result::Result<S::Ok, S::Error> {
        v.iter()
            .map(|x| x.to_bits())
            .collect::<Vec<u32>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<f32>, D::Error> {
        Ok(Vec::<u32>::deserialize(d)?
            .into_iter()
            .map(f32::from_bits)
            .collect())
    }
}

/// Load a model by name (see `ModelSpec`) with default options.
pub fn load(name: &str) -> Result<Box<dyn LanguageModel>> {
    load_spec(&ModelSpec::parse(name)?, &LoadOptions::default())
}

/// Load a parsed model name.
///
/// API models read their key from the environment here; a missing key is an error now,
/// not at the first request.
pub fn load_spec(spec: &ModelSpec, options: &LoadOptions) -> Result<Box<dyn LanguageModel>> {
    match spec {
        ModelSpec::Local(_) | ModelSpec::Gguf(_) => {
            Ok(Box::new(LocalModel::load(spec, options)?) as Box<dyn LanguageModel>)
        }
        ModelSpec::OpenAi { .. }
        | ModelSpec::OpenAiCompatible { .. }
        | ModelSpec::Gemini { .. } => api::load(spec, &options.api),
    }
}
