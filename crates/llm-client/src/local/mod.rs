//! The local backend: GGUF models run in-process on the CPU with candle.

mod cache;
pub mod gemma3;
mod gguf;
pub mod kernels;
pub mod llama;
mod nn;
mod pool;
mod sampling;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use candle_core::Tensor;

pub use cache::KvCache;
use gguf::Gguf;
use kernels::Span;

use crate::chat::{ChatMessage, ChatTemplate};
use crate::error::{LlmError, Result};
use crate::name::ModelSpec;
use crate::tokenizer::Tokenizer;
use crate::{Completion, FinishReason, GenerateParams, LanguageModel, Prompt};

/// The local models' arithmetic, for the response cache's keys (`LanguageModel::arithmetic`):
/// int8 blocks of 32 for every linear layer's weights and inputs. Change it when the numbers a
/// local model computes change.
pub const ARITHMETIC: &str = "int8-blocks-32";

/// How a local model is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// Upper bound on the context (RoPE tables and cache are sized to it); the model's own
    /// maximum applies if smaller.
    pub max_context: usize,
    /// Keep the KV cache of the previous request and reuse the prefix a new request shares
    /// with it (few-shot prompts share their support set across queries).
    pub reuse_prefix: bool,
    /// Prompt positions per forward pass: a chunk's attention scores are (heads, chunk,
    /// context) instead of (heads, t, t). One pass over a 4k-token prompt took Gemma 3 270M's
    /// peak memory to 1.8 GB; 512-position chunks keep it at 0.9 GB, and run no slower.
    pub prefill_chunk: usize,
    /// How API models (`openai:`, `openai-compatible:`, `gemini:`) are reached.
    pub api: crate::api::ApiOptions,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            max_context: 8192,
            reuse_prefix: true,
            prefill_chunk: 512,
            api: crate::api::ApiOptions::default(),
        }
    }
}

/// The decoder architectures this backend runs.
enum Decoder {
    Gemma3(gemma3::Model),
    Llama(llama::Model),
}

impl Decoder {
    fn forward(
        &self,
        tokens: &[u32],
        span: &Span,
        cache: &mut KvCache,
        logits_from: usize,
    ) -> Result<Tensor> {
        if span.len() != tokens.len() {
            return Err(LlmError::Tensor(candle_core::Error::Msg(format!(
                "forward: {} tokens for a span of {}",
                tokens.len(),
                span.len()
            ))));
        }
        // On rayon's pool with its workers awake for the pass's parallel steps (`pool`).
        pool::run(|| match self {
            Decoder::Gemma3(m) => m.forward(tokens, span, cache, logits_from),
            Decoder::Llama(m) => m.forward(tokens, span, cache, logits_from),
        })
    }

    fn num_layers(&self) -> usize {
        match self {
            Decoder::Gemma3(m) => m.config().num_layers,
            Decoder::Llama(m) => m.config().num_layers,
        }
    }

    fn max_seq_len(&self) -> usize {
        match self {
            Decoder::Gemma3(m) => m.config().max_seq_len,
            Decoder::Llama(m) => m.config().max_seq_len,
        }
    }

    fn vocab_size(&self) -> usize {
        match self {
            Decoder::Gemma3(m) => m.config().vocab_size,
            Decoder::Llama(m) => m.config().vocab_size,
        }
    }
}

/// Tokens whose keys and values are in `cache`, position by position.
struct CacheState {
    cache: KvCache,
    tokens: Vec<u32>,
}

impl CacheState {
    /// How many of `tokens`' first positions the cache holds.
    fn shared(&self, tokens: &[u32]) -> usize {
        self.tokens
            .iter()
            .zip(tokens)
            .take_while(|(a, b)| a == b)
            .count()
    }
}

/// A GGUF model run in-process.
pub struct LocalModel {
    name: String,
    tokenizer: Tokenizer,
    decoder: Decoder,
    reuse_prefix: bool,
    prefill_chunk: usize,
    state: Mutex<CacheState>,
}

impl std::fmt::Debug for LocalModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalModel")
            .field("name", &self.name)
            .field("tokenizer", &self.tokenizer)
            .field("layers", &self.decoder.num_layers())
            .field("context", &self.decoder.max_seq_len())
            .finish()
    }
}

impl LocalModel {
    /// Load `local:NAME` (fetching the file through `spae-assets` if absent) or `gguf:PATH`.
    pub fn load(spec: &ModelSpec, options: &LoadOptions) -> Result<Self> {
        let path = match spec {
            ModelSpec::Local(known) => {
                spae_assets::AssetCache::from_env().fetch_named(known.asset_name())?
            }
            ModelSpec::Gguf(path) => path.clone(),
            other => {
                return Err(LlmError::BadModelName {
                    name: other.to_string(),
                    reason: "not a local model".into(),
                })
            }
        };
        Self::from_gguf(&path, spec.to_string(), options)
    }

    /// Load the GGUF file at `path`, naming the model `name`.
    pub fn from_gguf(path: &Path, name: String, options: &LoadOptions) -> Result<Self> {
        let mut g = Gguf::open(path)?;
        let tokenizer = Tokenizer::from_gguf(&g.content).map_err(|e| g.error(e.to_string()))?;
        let arch = g.string("general.architecture")?;
        let decoder = match arch.as_str() {
            "gemma3" => {
                let cfg = gemma3::Config::from_gguf(&g, options.max_context)?;
                Decoder::Gemma3(gemma3::Model::new(&cfg, &mut g)?)
            }
            "llama" => {
                let cfg = llama::Config::from_gguf(&g, options.max_context)?;
                Decoder::Llama(llama::Model::new(&cfg, &mut g)?)
            }
            other => {
                return Err(g.error(format!(
                    "architecture {other:?} is not supported (only gemma3 and llama)"
                )))
            }
        };
        if tokenizer.vocab_size() > decoder.vocab_size() {
            return Err(g.error(format!(
                "tokenizer has {} tokens but the embedding only {}",
                tokenizer.vocab_size(),
                decoder.vocab_size()
            )));
        }
        let state = Mutex::new(CacheState {
            cache: KvCache::new(decoder.num_layers()),
            tokens: Vec::new(),
        });
        Ok(Self {
            name,
            tokenizer,
            decoder,
            reuse_prefix: options.reuse_prefix,
            prefill_chunk: options.prefill_chunk.max(1),
            state,
        })
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// How this model's architecture writes a conversation.
    pub fn chat_template(&self) -> ChatTemplate {
        match self.decoder {
            Decoder::Gemma3(_) => ChatTemplate::Gemma,
            Decoder::Llama(_) => ChatTemplate::ChatMl,
        }
    }

    /// Token ids of a prompt: text gets the model's BOS; ids are checked against the vocabulary.
    pub fn prompt_ids(&self, prompt: &Prompt) -> Result<Vec<u32>> {
        let ids = match prompt {
            Prompt::Text(text) => {
                let mut ids: Vec<u32> = self.tokenizer.bos_to_add().into_iter().collect();
                ids.extend(self.tokenizer.encode(text));
                ids
            }
            Prompt::Tokens(ids) => {
                self.check_ids(ids)?;
                ids.clone()
            }
        };
        if ids.is_empty() {
            return Err(LlmError::EmptyPrompt);
        }
        Ok(ids)
    }

    /// Ids the embedding has a row for; anything else is the caller's error, not a panic.
    fn check_ids(&self, ids: &[u32]) -> Result<()> {
        let vocab = self.decoder.vocab_size();
        match ids.iter().find(|&&id| id as usize >= vocab) {
            Some(&id) => Err(LlmError::TokenOutOfRange { id, vocab }),
            None => Ok(()),
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, CacheState>> {
        self.state.lock().map_err(|_| LlmError::Poisoned)
    }

    /// Drop the cached prefix, so that the next request runs from scratch.
    pub fn clear_cache(&self) -> Result<()> {
        let mut state = self.lock()?;
        state.cache.clear();
        state.tokens.clear();
        Ok(())
    }

    /// Logits `(1, tokens.len() - logits_from, vocab)` for positions `logits_from..` of
    /// `tokens`, reusing the cached prefix `tokens` shares with the previous call when
    /// `reuse` allows.
    fn run(
        &self,
        state: &mut CacheState,
        tokens: &[u32],
        logits_from: usize,
        reuse: bool,
    ) -> Result<Tensor> {
        if logits_from >= tokens.len() {
            return Err(LlmError::EmptyPrompt);
        }
        let context = self.decoder.max_seq_len();
        if tokens.len() > context {
            return Err(LlmError::ContextOverflow {
                needed: tokens.len(),
                context,
            });
        }
        let shared = if reuse { state.shared(tokens) } else { 0 };
        // Positions whose logits are wanted must be run even when cached.
        let keep = shared.min(logits_from);
        state.cache.truncate(keep)?;
        state.tokens.truncate(keep);
        let result = self.forward_chunked(&tokens[keep..], &mut state.cache, logits_from - keep);
        match result {
            Ok(logits) => {
                state.tokens.extend_from_slice(&tokens[keep..]);
                Ok(logits)
            }
            Err(e) => {
                // A failed forward may have appended some layers and not others.
                state.cache.clear();
                state.tokens.clear();
                Err(e)
            }
        }
    }

    /// `decoder.forward` over `tokens` in chunks of `prefill_chunk` positions: a chunk's
    /// attention scores are (heads, chunk, context) instead of (heads, t, t), which bounds the
    /// memory of a long prompt. Chunks wholly before `logits_from` compute one row of the head
    /// (the cheapest valid call) and drop it.
    fn forward_chunked(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        logits_from: usize,
    ) -> Result<Tensor> {
        let mut wanted = Vec::new();
        let mut start = 0;
        while start < tokens.len() {
            let end = (start + self.prefill_chunk).min(tokens.len());
            let chunk_from = logits_from.saturating_sub(start).min(end - start - 1);
            let logits = self.decoder.forward(
                &tokens[start..end],
                &Span::sequence(end - start),
                cache,
                chunk_from,
            )?;
            if end > logits_from {
                wanted.push(logits);
            }
            start = end;
        }
        Ok(Tensor::cat(&wanted, 1)?)
    }

    /// Logits at positions `logits_from..` of `tokens`, as rows of f32. For tests and tools
    /// that inspect the model; honours the prefix cache like `generate` and `score`.
    pub fn logits(&self, tokens: &[u32], logits_from: usize) -> Result<Vec<Vec<f32>>> {
        self.check_ids(tokens)?;
        let mut state = self.lock()?;
        let logits = self.run(&mut state, tokens, logits_from, self.reuse_prefix)?;
        Ok(logits.squeeze(0)?.to_vec2::<f32>()?)
    }

    /// For each of `tokens[1..]`, its log-probability given the tokens before it (an
    /// OpenAI `echo` answer).
    pub fn prompt_logprobs(&self, tokens: &[u32]) -> Result<Vec<f32>> {
        if tokens.len() < 2 {
            return Ok(Vec::new());
        }
        // Row i of the logits of tokens[..n-1] predicts tokens[i + 1].
        let rows = self.logits(&tokens[..tokens.len() - 1], 0)?;
        Ok(rows
            .iter()
            .zip(&tokens[1..])
            .map(|(row, &id)| nn::log_softmax(row)[id as usize])
            .collect())
    }

    /// `score` on token ids: the summed log-probability of each continuation after `prompt`.
    ///
    /// The continuations run together, as branches of one forward call after the prompt
    /// ([`Span`]), as many per call as fit in `prefill_chunk` positions: one pass over the
    /// weights instead of one per continuation. Each branch sees the prompt and itself only,
    /// so its log-probabilities are the bits a call on `prompt + continuation` alone gives.
    pub fn score_tokens(&self, prompt: &[u32], continuations: &[Vec<u32>]) -> Result<Vec<f32>> {
        if prompt.is_empty() {
            return Err(LlmError::EmptyPrompt);
        }
        self.check_ids(prompt)?;
        for cont in continuations {
            self.check_ids(cont)?;
        }
        let context = self.decoder.max_seq_len();
        let longest = continuations.iter().map(Vec::len).max().unwrap_or(0);
        if prompt.len() + longest > context {
            return Err(LlmError::ContextOverflow {
                needed: prompt.len() + longest,
                context,
            });
        }
        let mut state = self.lock()?;
        let result = self.score_branches(&mut state, prompt, continuations);
        if result.is_err() {
            // A failed forward may have appended some layers and not others.
            state.cache.clear();
            state.tokens.clear();
        }
        result
    }

    fn score_branches(
        &self,
        state: &mut CacheState,
        prompt: &[u32],
        continuations: &[Vec<u32>],
    ) -> Result<Vec<f32>> {
        let p = prompt.len();
        let shared = if self.reuse_prefix {
            state.shared(prompt)
        } else {
            0
        };
        // The last prompt position's logits predict every continuation's first token, so it
        // runs (as the root of the first call) even when cached.
        let keep = shared.min(p - 1);
        state.cache.truncate(keep)?;
        state.tokens.truncate(keep);
        if p - keep > self.prefill_chunk {
            // A long uncached prompt goes through the chunked prefill first.
            self.run(state, &prompt[..p - 1], p - 2, true)?;
        }
        let mut root: Vec<u32> = prompt[state.tokens.len()..].to_vec();
        // Per continuation, each token's log-probability, in order.
        let mut logprobs: Vec<Vec<f32>> = continuations
            .iter()
            .map(|c| Vec::with_capacity(c.len()))
            .collect();
        let branch = |c: &Vec<u32>| c.len().saturating_sub(1);
        let mut first_row: Vec<f32> = Vec::new();
        let mut i = 0;
        while !root.is_empty() || i < continuations.len() {
            let mut j = i;
            let mut size = root.len();
            while j < continuations.len()
                && (j == i || size + branch(&continuations[j]) <= self.prefill_chunk)
            {
                size += branch(&continuations[j]);
                j += 1;
            }
            if size == 0 {
                i = j;
                continue;
            }
            let span = Span {
                root: root.len(),
                branches: continuations[i..j].iter().map(branch).collect(),
            };
            let mut tokens = root.clone();
            for c in &continuations[i..j] {
                tokens.extend_from_slice(&c[..branch(c)]);
            }
            let logits_from = root.len().saturating_sub(1);
            let logits = self
                .decoder
                .forward(&tokens, &span, &mut state.cache, logits_from)?;
            let mut rows = nn::log_softmax_rows(&logits)?.into_iter();
            if !root.is_empty() {
                first_row = rows.next().unwrap_or_default();
                state.tokens.append(&mut root);
            }
            for (c, lp) in continuations[i..j].iter().zip(&mut logprobs[i..j]) {
                for (&id, row) in c.iter().skip(1).zip(rows.by_ref().take(branch(c))) {
                    lp.push(row[id as usize]);
                }
            }
            // Drop the branches: the cache holds the prompt again.
            state.cache.truncate(p)?;
            i = j;
        }
        Ok(continuations
            .iter()
            .zip(logprobs)
            .map(|(c, rest)| match c.first() {
                None => 0.0,
                Some(&id) => {
                    let first = first_row.get(id as usize).copied().unwrap_or(f32::NAN);
                    let total: f64 = std::iter::once(first).chain(rest).map(|x| x as f64).sum();
                    total as f32
                }
            })
            .collect())
    }

    /// `generate` on token ids.
    pub fn generate_tokens(&self, prompt: &[u32], params: &GenerateParams) -> Result<Completion> {
        self.generate_tokens_with(prompt, params, &mut |_, _| {})
    }

    /// `generate_tokens`, calling `on_token(id, logprob)` as each token is chosen (a server
    /// streams from here).
    pub fn generate_tokens_with(
        &self,
        prompt: &[u32],
        params: &GenerateParams,
        on_token: &mut dyn FnMut(u32, f32),
    ) -> Result<Completion> {
        params.validate()?;
        if prompt.is_empty() {
            return Err(LlmError::EmptyPrompt);
        }
        self.check_ids(prompt)?;
        let mut state = self.lock()?;
        let mut sampler = sampling::Sampler::new(params);
        let allowed: Option<Vec<bool>> = match &params.allowed_tokens {
            None => None,
            Some(ids) => {
                self.check_ids(ids)?;
                if ids.is_empty() {
                    return Err(LlmError::InvalidParams("allowed_tokens is empty".into()));
                }
                let mut mask = vec![false; self.decoder.vocab_size()];
                for &id in ids {
                    mask[id as usize] = true;
                }
                Some(mask)
            }
        };
        let context = self.decoder.max_seq_len();
        let mut tokens = prompt.to_vec();
        let mut generated = Vec::new();
        let mut logprobs = Vec::new();
        let mut text = String::new();
        let mut finish = FinishReason::Length;
        let mut reuse = self.reuse_prefix;
        while generated.len() < params.max_tokens {
            if tokens.len() >= context {
                finish = FinishReason::ContextFull;
                break;
            }
            let logits = self.run(&mut state, &tokens, tokens.len() - 1, reuse)?;
            // Within one request the cache always holds everything but the newest token.
            reuse = true;
            let row = logits.squeeze(0)?.squeeze(0)?.to_vec1::<f32>()?;
            let logp = nn::log_softmax(&row);
            let next = match &allowed {
                Some(mask) => {
                    let masked: Vec<f32> = row
                        .iter()
                        .zip(mask)
                        .map(|(&l, &ok)| if ok { l } else { f32::NEG_INFINITY })
                        .collect();
                    sampler.sample(&masked)
                }
                None => sampler.sample(&row),
            };
            generated.push(next);
            logprobs.push(logp[next as usize]);
            on_token(next, logp[next as usize]);
            tokens.push(next);
            if self.tokenizer.is_eos(next) {
                finish = FinishReason::EndOfSequence;
                break;
            }
            text = self.tokenizer.decode(&generated)?;
            if let Some(cut) = params
                .stop
                .iter()
                .filter_map(|s| text.find(s.as_str()))
                .min()
            {
                text.truncate(cut);
                finish = FinishReason::Stop;
                break;
            }
        }
        if finish == FinishReason::EndOfSequence {
            text = self.tokenizer.decode(&generated[..generated.len() - 1])?;
        }
        Ok(Completion {
            text,
            tokens: generated,
            logprobs,
            finish_reason: finish,
        })
    }
}

#[async_trait::async_trait]
impl LanguageModel for LocalModel {
    fn arithmetic(&self) -> Option<&'static str> {
        Some(ARITHMETIC)
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn context_length(&self) -> usize {
        self.decoder.max_seq_len()
    }

    fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.tokenizer.encode(text))
    }

    fn detokenize(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer.decode(ids)
    }

    fn bos_token(&self) -> Option<u32> {
        self.tokenizer.bos_to_add()
    }

    // Compute runs on the calling task: the model is CPU-bound and holds its cache lock for
    // the whole request, so callers that want concurrency use `spawn_blocking`.
    async fn generate(&self, prompt: &Prompt, params: &GenerateParams) -> Result<Completion> {
        let ids = self.prompt_ids(prompt)?;
        self.generate_tokens(&ids, params)
    }

    async fn score(&self, prompt: &Prompt, continuations: &[String]) -> Result<Vec<f32>> {
        let ids = self.prompt_ids(prompt)?;
        let conts: Vec<Vec<u32>> = continuations
            .iter()
            .map(|c| self.tokenizer.encode(c))
            .collect();
        self.score_tokens(&ids, &conts)
    }

    async fn chat(&self, messages: &[ChatMessage], params: &GenerateParams) -> Result<Completion> {
        let text = self.chat_template().render(messages);
        self.generate(&Prompt::Text(text), params).await
    }
}
