//! Gemini's `generateContent`, with the PaLM-era sampling knobs (temperature, top-k, top-p,
//! candidate count). The key travels in the `x-goog-api-key` header, never in the URL.

use serde::Deserialize;
use serde_json::{json, Value};

use super::http::{Auth, HttpClient};
use super::{ApiKey, ApiOptions, Usage};
use crate::chat::{ChatMessage, Role};
use crate::error::{LlmError, Result};
use crate::name::ModelSpec;
use crate::{Completion, FinishReason, GenerateParams, LanguageModel, Prompt};

const GEMINI_BASE_URL: &str = "https://generativelanguage.googleapis.com/v1beta";

/// A Gemini model.
#[derive(Debug)]
pub struct GeminiModel {
    name: String,
    url: String,
    top_k: Option<u32>,
    candidate_count: u32,
    context_length: usize,
    http: HttpClient,
}

impl GeminiModel {
    pub fn new(spec: &ModelSpec, key: Option<ApiKey>, options: &ApiOptions) -> Result<Self> {
        let ModelSpec::Gemini { model } = spec else {
            return Err(LlmError::BadModelName {
                name: spec.to_string(),
                reason: "not a Gemini model".into(),
            });
        };
        if options.candidate_count == 0 {
            return Err(LlmError::InvalidParams(
                "candidate_count must be at least 1".into(),
            ));
        }
        let base = options.base_url.as_deref().unwrap_or(GEMINI_BASE_URL);
        let name = spec.to_string();
        Ok(Self {
            url: format!(
                "{}/models/{model}:generateContent",
                base.trim_end_matches('/')
            ),
            http: HttpClient::new(
                name.clone(),
                key.map(|k| Auth::Header("x-goog-api-key", k)),
                options,
            )?,
            name,
            top_k: options.top_k,
            candidate_count: options.candidate_count,
            context_length: options.context_length.unwrap_or(1_000_000),
        })
    }

    fn unsupported(&self, what: &str) -> LlmError {
        LlmError::Unsupported {
            name: self.name.clone(),
            what: what.to_string(),
        }
    }

    /// `candidate_count` answers to `prompt` (Gemini samples them independently).
    pub async fn generate_candidates(
        &self,
        prompt: &Prompt,
        params: &GenerateParams,
    ) -> Result<Vec<Completion>> {
        let Prompt::Text(text) = prompt else {
            return Err(self.unsupported("a prompt of token ids"));
        };
        self.request(&[ChatMessage::user(text.clone())], params)
            .await
    }

    async fn request(
        &self,
        messages: &[ChatMessage],
        params: &GenerateParams,
    ) -> Result<Vec<Completion>> {
        params.validate()?;
        let mut contents = Vec::new();
        let mut system = Vec::new();
        for m in messages {
            let role = match m.role {
                Role::System => {
                    system.push(json!({ "text": m.content }));
                    continue;
                }
                Role::User => "user",
                Role::Assistant => "model",
            };
            contents.push(json!({ "role": role, "parts": [{ "text": m.content }] }));
        }
        let mut config = json!({
            "temperature": params.temperature,
            "topP": params.top_p,
            "candidateCount": self.candidate_count,
            "maxOutputTokens": params.max_tokens,
            "seed": params.seed,
        });
        if let Some(k) = self.top_k {
            config["topK"] = json!(k);
        }
        if !params.stop.is_empty() {
            config["stopSequences"] = json!(params.stop);
        }
        let mut body = json!({ "contents": contents, "generationConfig": config });
        if !system.is_empty() {
            body["systemInstruction"] = json!({ "parts": system });
        }
        let response: GenerateResponse = self.http.post_json(&self.url, &body).await?;
        if let Some(u) = &response.usage_metadata {
            self.http
                .add_usage(u.prompt_token_count, u.candidates_token_count);
        }
        if response.candidates.is_empty() {
            let why = response
                .prompt_feedback
                .and_then(|f| f.get("blockReason").cloned())
                .map(|r| format!("no candidates (prompt blocked: {r})"))
                .unwrap_or_else(|| "no candidates".into());
            return Err(self.http.bad_response(why));
        }
        response
            .candidates
            .into_iter()
            .map(|c| self.completion(c, params))
            .collect()
    }

    fn completion(&self, c: Candidate, params: &GenerateParams) -> Result<Completion> {
        let finish_reason = match c.finish_reason.as_deref() {
            Some("MAX_TOKENS") => FinishReason::Length,
            // Gemini says STOP for a stop sequence and for the end of the answer alike.
            Some("STOP") | None if !params.stop.is_empty() => FinishReason::Stop,
            Some("STOP") | None => FinishReason::EndOfSequence,
            Some(other) => {
                return Err(self
                    .http
                    .bad_response(format!("generation stopped: {other}")))
            }
        };
        let text = c
            .content
            .map(|content| {
                content
                    .parts
                    .into_iter()
                    .filter_map(|p| p.text)
                    .collect::<String>()
            })
            .unwrap_or_default();
        let logprobs = c
            .logprobs_result
            .map(|r| {
                r.chosen_candidates
                    .into_iter()
                    .map(|t| t.log_probability)
                    .collect()
            })
            .unwrap_or_default();
        Ok(Completion {
            text,
            tokens: Vec::new(),
            logprobs,
            finish_reason,
        })
    }

    async fn first(&self, messages: &[ChatMessage], params: &GenerateParams) -> Result<Completion> {
        self.request(messages, params)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| self.http.bad_response("no candidates"))
    }
}

#[async_trait::async_trait]
impl LanguageModel for GeminiModel {
    fn name(&self) -> &str {
        &self.name
    }

    fn context_length(&self) -> usize {
        self.context_length
    }

    fn tokenize(&self, _text: &str) -> Result<Vec<u32>> {
        Err(self.unsupported("tokenize"))
    }

    fn detokenize(&self, _ids: &[u32]) -> Result<String> {
        Err(self.unsupported("detokenize"))
    }

    async fn generate(&self, prompt: &Prompt, params: &GenerateParams) -> Result<Completion> {
        let Prompt::Text(text) = prompt else {
            return Err(self.unsupported("a prompt of token ids"));
        };
        if params.allowed_tokens.is_some() {
            return Err(self.unsupported("decoding restricted to a token set"));
        }
        self.first(&[ChatMessage::user(text.clone())], params).await
    }

    async fn score(&self, _prompt: &Prompt, _continuations: &[String]) -> Result<Vec<f32>> {
        Err(self.unsupported("score (generateContent returns no logprobs of a given continuation)"))
    }

    async fn chat(&self, messages: &[ChatMessage], params: &GenerateParams) -> Result<Completion> {
        self.first(messages, params).await
    }

    fn usage(&self) -> Usage {
        self.http.usage()
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerateResponse {
    #[serde(default)]
    candidates: Vec<Candidate>,
    #[serde(default)]
    usage_metadata: Option<UsageMetadata>,
    #[serde(default)]
    prompt_feedback: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    logprobs_result: Option<LogprobsResult>,
}

#[derive(Debug, Deserialize)]
struct Content {
    #[serde(default)]
    parts: Vec<Part>,
}

#[derive(Debug, Deserialize)]
struct Part {
    #[serde(default)]
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogprobsResult {
    #[serde(default)]
    chosen_candidates: Vec<TokenLogprob>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenLogprob {
    log_probability: f32,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    #[serde(default)]
    prompt_token_count: u64,
    #[serde(default)]
    candidates_token_count: u64,
}
