//! Which LLM a task asks, loaded behind the response cache.

use std::path::PathBuf;
use std::sync::Arc;

use llm_client::{ApiOptions, CachedModel, LanguageModel, LoadOptions, ModelSpec, ResponseCache};
use serde::{Deserialize, Serialize};
use spae_core::Codebook;

use crate::bail;
use crate::error::{Context, Result};

/// An LLM by name (`local:gemma3-270m`, `gguf:PATH`, `openai:MODEL`,
/// `openai-compatible:URL#MODEL`, `gemini:MODEL`) and how it is reached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlmConfig {
    pub name: String,
    /// Read the API key from this variable (default OPENAI_API_KEY or GEMINI_API_KEY).
    pub api_key_env: Option<String>,
    /// The response cache (default $SPAE_HOME/responses.sqlite).
    pub cache: Option<PathBuf>,
    /// Ask the model every time; read and write no cache.
    pub no_cache: bool,
    pub requests_per_minute: Option<u32>,
}

impl Default for LlmConfig {
    fn default() -> Self {
        Self::named("local:gemma3-270m")
    }
}

impl LlmConfig {
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_string(),
            api_key_env: None,
            cache: None,
            no_cache: false,
            requests_per_minute: None,
        }
    }

    pub fn spec(&self) -> Result<ModelSpec> {
        ModelSpec::parse(&self.name).with_context(|| format!("--llm {}", self.name))
    }

    /// A local model reads image words as exact token ids; an API model reads text.
    pub fn is_local(&self) -> Result<bool> {
        Ok(matches!(
            self.spec()?,
            ModelSpec::Local(_) | ModelSpec::Gguf(_)
        ))
    }

    /// The model, with answers cached unless `no_cache`.
    pub fn load(&self) -> Result<Box<dyn LanguageModel>> {
        let spec = self.spec()?;
        let options = LoadOptions {
            api: ApiOptions {
                api_key_env: self.api_key_env.clone(),
                requests_per_minute: self.requests_per_minute,
                ..ApiOptions::default()
            },
            ..LoadOptions::default()
        };
        let model = llm_client::load_spec(&spec, &options)
            .with_context(|| format!("--llm {}", self.name))?;
        if self.no_cache {
            return Ok(model);
        }
        let path = self
            .cache
            .clone()
            .unwrap_or_else(ResponseCache::default_path);
        let cache = ResponseCache::open(&path)?;
        tracing::debug!(cache = %path.display(), "response cache");
        Ok(Box::new(CachedModel::new(model, Arc::new(cache))))
    }
}

/// How image words reach the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptForm {
    /// Exact token ids (local models): the words are never re-tokenized.
    Tokens,
    /// Text (API models, or `text_prompts`).
    Text,
}

impl PromptForm {
    /// Token ids for a local model unless `text` asks for text.
    pub fn for_llm(llm: &LlmConfig, text: bool) -> Result<Self> {
        Ok(if llm.is_local()? && !text {
            PromptForm::Tokens
        } else {
            PromptForm::Text
        })
    }
}

/// A local model reads image words as token ids, so the checkpoint's codebook must come from
/// this model's vocabulary: sample entries and check each is the single token the model gives
/// its word.
pub fn check_vocabulary(llm: &dyn LanguageModel, codebook: &Codebook) -> Result<()> {
    let n = codebook.len();
    let step = (n / 32).max(1);
    let (mut agree, mut total) = (0usize, 0usize);
    for i in (0..n).step_by(step).take(32) {
        total += 1;
        let ids = llm.tokenize(&format!(" {}", codebook.word(i)))?;
        agree += (ids == [codebook.token_ids()[i]]) as usize;
    }
    if agree * 10 < total * 9 {
        bail!(
            "the checkpoint's codebook was read from {} but {} gives only {agree} of {total} sampled \
             codebook words the same single token id, so the image token ids would be wrong: use a \
             checkpoint built on this LLM's vocabulary, or --text-prompts",
            codebook.info().source,
            llm.name()
        );
    }
    Ok(())
}
