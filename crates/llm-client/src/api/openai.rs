//! OpenAI and OpenAI-compatible servers: `/v1/completions` (raw continuation, logprobs,
//! `echo` for scoring) and `/v1/chat/completions`.

use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

use super::http::{Auth, HttpClient};
use super::{ApiKey, ApiOptions, Usage};
use crate::chat::ChatMessage;
use crate::error::{LlmError, Result};
use crate::name::ModelSpec;
use crate::{Completion, FinishReason, GenerateParams, LanguageModel, Prompt};

const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";

/// The endpoint `generate` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenAiEndpoint {
    /// `/completions`: continues raw text or token ids, and can score (`echo`).
    Completions,
    /// `/chat/completions`: the prompt is sent as one user message.
    Chat,
}

/// A model behind OpenAI's API or an OpenAI-compatible server.
#[derive(Debug)]
pub struct OpenAiModel {
    name: String,
    model: String,
    base_url: String,
    endpoint: OpenAiEndpoint,
    /// OpenAI itself (not a compatible server): it names the chat token limit differently.
    official: bool,
    context_length: usize,
    http: HttpClient,
}

impl OpenAiModel {
    pub fn new(spec: &ModelSpec, key: Option<ApiKey>, options: &ApiOptions) -> Result<Self> {
        let (model, base_url, official) = match spec {
            ModelSpec::OpenAi { model } => (
                model.clone(),
                options
                    .base_url
                    .clone()
                    .unwrap_or_else(|| OPENAI_BASE_URL.to_string()),
                true,
            ),
            ModelSpec::OpenAiCompatible { base_url, model } => {
                (model.clone(), base_url.clone(), false)
            }
            other => {
                return Err(LlmError::BadModelName {
                    name: other.to_string(),
                    reason: "not an OpenAI model".into(),
                })
            }
        };
        let legacy = ["davinci", "babbage"].iter().any(|p| model.starts_with(p))
            || model.ends_with("-instruct");
        let endpoint = options.openai_endpoint.unwrap_or(if official && !legacy {
            OpenAiEndpoint::Chat
        } else {
            OpenAiEndpoint::Completions
        });
        let name = spec.to_string();
        Ok(Self {
            http: HttpClient::new(name.clone(), key.map(Auth::Bearer), options)?,
            name,
            model,
            base_url: base_url.trim_end_matches('/').to_string(),
            endpoint,
            official,
            context_length: options
                .context_length
                .unwrap_or(if official { 128_000 } else { 8192 }),
        })
    }

    fn unsupported(&self, what: &str) -> LlmError {
        LlmError::Unsupported {
            name: self.name.clone(),
            what: what.to_string(),
        }
    }

    /// POST `body` to `path` and return the answer's choices, counting its usage.
    async fn choices<C: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<Vec<C>> {
        let url = format!("{}{path}", self.base_url);
        let response: Choices<C> = self.http.post_json(&url, body).await?;
        if let Some(u) = &response.usage {
            self.http.add_usage(u.prompt_tokens, u.completion_tokens);
        }
        Ok(response.choices)
    }

    async fn first_choice<C: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<C> {
        self.choices(path, body)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| self.http.bad_response("no choices"))
    }

    async fn complete(&self, prompt: &Prompt, params: &GenerateParams) -> Result<Completion> {
        let prompt = match prompt {
            Prompt::Text(text) => json!(text),
            // The completions endpoint takes a prompt as a list of token ids.
            Prompt::Tokens(ids) => json!(ids),
        };
        let mut body = json!({
            "model": self.model,
            "prompt": prompt,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": params.seed,
            "logprobs": 1,
        });
        if !params.stop.is_empty() {
            body["stop"] = json!(params.stop);
        }
        let choice: CompletionChoice = self.first_choice("/completions", &body).await?;
        let logprobs = match choice.logprobs {
            Some(lp) => lp
                .token_logprobs
                .into_iter()
                .map(|x| {
                    x.ok_or_else(|| self.http.bad_response("a generated token has no logprob"))
                })
                .collect::<Result<_>>()?,
            None => Vec::new(),
        };
        Ok(Completion {
            finish_reason: finish_reason(
                choice.finish_reason.as_deref(),
                &choice.stop_reason,
                params,
            ),
            text: choice.text,
            tokens: Vec::new(),
            logprobs,
        })
    }

    async fn chat_request(
        &self,
        messages: &[ChatMessage],
        params: &GenerateParams,
    ) -> Result<Completion> {
        let mut body = json!({
            "model": self.model,
            "messages": messages,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": params.seed,
            "logprobs": true,
        });
        // OpenAI renamed the limit for chat; compatible servers read the old name.
        let limit = if self.official {
            "max_completion_tokens"
        } else {
            "max_tokens"
        };
        body[limit] = json!(params.max_tokens);
        if !params.stop.is_empty() {
            body["stop"] = json!(params.stop);
        }
        let choice: ChatChoice = self.first_choice("/chat/completions", &body).await?;
        let logprobs = choice
            .logprobs
            .and_then(|lp| lp.content)
            .map(|c| c.into_iter().map(|t| t.logprob).collect())
            .unwrap_or_default();
        Ok(Completion {
            finish_reason: finish_reason(
                choice.finish_reason.as_deref(),
                &choice.stop_reason,
                params,
            ),
            text: choice.message.content.unwrap_or_default(),
            tokens: Vec::new(),
            logprobs,
        })
    }
}

#[async_trait::async_trait]
impl LanguageModel for OpenAiModel {
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
        params.validate()?;
        if params.allowed_tokens.is_some() {
            // logit_bias holds at most 300 entries: too few for a codebook.
            return Err(self.unsupported("decoding restricted to a token set"));
        }
        match (self.endpoint, prompt) {
            (OpenAiEndpoint::Completions, _) => self.complete(prompt, params).await,
            (OpenAiEndpoint::Chat, Prompt::Text(text)) => {
                self.chat_request(&[ChatMessage::user(text.clone())], params)
                    .await
            }
            (OpenAiEndpoint::Chat, Prompt::Tokens(_)) => Err(self.unsupported(
                "a prompt of token ids on the chat endpoint (use a completions model)",
            )),
        }
    }

    /// One `/completions` request with `echo: true, max_tokens: 0`: the server returns the
    /// logprob of every prompt token, and the tokens that make up each continuation's text
    /// (from the end) are summed. A token straddling the prompt/continuation boundary counts.
    async fn score(&self, prompt: &Prompt, continuations: &[String]) -> Result<Vec<f32>> {
        let Prompt::Text(prompt) = prompt else {
            return Err(self.unsupported("score with a prompt of token ids"));
        };
        if self.endpoint == OpenAiEndpoint::Chat {
            return Err(self.unsupported(
                "score (it needs /completions with echo and logprobs; chat models have neither)",
            ));
        }
        if prompt.is_empty() {
            return Err(LlmError::EmptyPrompt);
        }
        let asked: Vec<usize> = (0..continuations.len())
            .filter(|&i| !continuations[i].is_empty())
            .collect();
        let mut totals = vec![0.0f32; continuations.len()];
        if asked.is_empty() {
            return Ok(totals);
        }
        let texts: Vec<String> = asked
            .iter()
            .map(|&i| format!("{prompt}{}", continuations[i]))
            .collect();
        let body = json!({
            "model": self.model,
            "prompt": texts,
            "max_tokens": 0,
            "echo": true,
            "logprobs": 1,
            "temperature": 0.0,
        });
        let choices: Vec<CompletionChoice> = self.choices("/completions", &body).await?;
        if choices.len() != asked.len() {
            return Err(self.http.bad_response(format!(
                "{} choices for {} prompts",
                choices.len(),
                asked.len()
            )));
        }
        for (pos, choice) in choices.into_iter().enumerate() {
            let slot = if choice.index < asked.len() {
                choice.index
            } else {
                pos
            };
            let full = &texts[slot];
            let cont = &continuations[asked[slot]];
            let lp = choice
                .logprobs
                .ok_or_else(|| self.http.bad_response("no logprobs in an echo answer"))?;
            totals[asked[slot]] = continuation_logprob(&lp, &choice.text, full, cont)
                .map_err(|what| self.http.bad_response(what))?;
        }
        Ok(totals)
    }

    async fn chat(&self, messages: &[ChatMessage], params: &GenerateParams) -> Result<Completion> {
        params.validate()?;
        self.chat_request(messages, params).await
    }

    fn usage(&self) -> Usage {
        self.http.usage()
    }
}

/// The summed logprob of the echoed tokens that cover `cont`, the end of `full`. Tokens the
/// server generated after the echo (`text` longer than `full`) are skipped first.
fn continuation_logprob(
    lp: &CompletionLogprobs,
    text: &str,
    full: &str,
    cont: &str,
) -> std::result::Result<f32, String> {
    if lp.tokens.len() != lp.token_logprobs.len() {
        return Err(format!(
            "{} tokens but {} logprobs",
            lp.tokens.len(),
            lp.token_logprobs.len()
        ));
    }
    let mut skip = text
        .strip_prefix(full)
        .map(|generated| generated.chars().count())
        .unwrap_or(0);
    let mut need = cont.chars().count();
    let mut total = 0.0f64;
    for (token, logprob) in lp.tokens.iter().zip(&lp.token_logprobs).rev() {
        if need == 0 {
            break;
        }
        let len = token.chars().count();
        if skip > 0 {
            skip = skip.saturating_sub(len);
            continue;
        }
        let logprob =
            logprob.ok_or("a continuation token has no logprob (is the prompt empty?)")?;
        total += logprob as f64;
        need = need.saturating_sub(len);
    }
    if need > 0 {
        return Err("the echoed tokens do not cover the continuation".into());
    }
    Ok(total as f32)
}

/// What `finish_reason` (and vLLM's `stop_reason`: a string for a stop string, null or a
/// token id for end of sequence) mean here.
fn finish_reason(
    reason: Option<&str>,
    stop_reason: &Option<Value>,
    params: &GenerateParams,
) -> FinishReason {
    match reason {
        Some("length") => FinishReason::Length,
        _ => match stop_reason {
            Some(Value::String(_)) => FinishReason::Stop,
            Some(_) => FinishReason::EndOfSequence,
            // Plain OpenAI says "stop" for both; a stop string is the likelier one if given.
            None if !params.stop.is_empty() => FinishReason::Stop,
            None => FinishReason::EndOfSequence,
        },
    }
}

/// `Some(value)` for a present field, `null` included; absent fields stay `None` (with
/// `#[serde(default)]`).
fn present<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

/// An answer of either endpoint: choices and usage.
#[derive(Debug, Deserialize)]
struct Choices<C> {
    choices: Vec<C>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Debug, Deserialize)]
struct CompletionChoice {
    #[serde(default)]
    index: usize,
    text: String,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default, deserialize_with = "present")]
    stop_reason: Option<Value>,
    #[serde(default)]
    logprobs: Option<CompletionLogprobs>,
}

#[derive(Debug, Deserialize)]
struct CompletionLogprobs {
    #[serde(default)]
    tokens: Vec<String>,
    #[serde(default)]
    token_logprobs: Vec<Option<f32>>,
}

#[derive(Debug, Deserialize)]
struct ChatChoice {
    message: ChatChoiceMessage,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default, deserialize_with = "present")]
    stop_reason: Option<Value>,
    #[serde(default)]
    logprobs: Option<ChatLogprobs>,
}

#[derive(Debug, Deserialize)]
struct ChatChoiceMessage {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ChatLogprobs {
    #[serde(default)]
    content: Option<Vec<ChatTokenLogprob>>,
}

#[derive(Debug, Deserialize)]
struct ChatTokenLogprob {
    logprob: f32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lp(tokens: &[&str], logprobs: &[Option<f32>]) -> CompletionLogprobs {
        CompletionLogprobs {
            tokens: tokens.iter().map(|t| t.to_string()).collect(),
            token_logprobs: logprobs.to_vec(),
        }
    }

    #[test]
    fn continuation_tokens_are_counted_from_the_end() {
        // A BOS the server echoes does not shift anything.
        let l = lp(
            &["<bos>", "The", " capital", " Paris"],
            &[None, Some(-1.0), Some(-2.0), Some(-0.5)],
        );
        let full = "The capital Paris";
        assert_eq!(continuation_logprob(&l, full, full, " Paris"), Ok(-0.5));
        assert_eq!(
            continuation_logprob(&l, full, full, "capital Paris"),
            Ok(-2.5),
            "a straddling token counts"
        );
        // A generated token after the echo is skipped.
        let g = lp(&["The", " Paris", "."], &[None, Some(-0.5), Some(-9.0)]);
        assert_eq!(
            continuation_logprob(&g, "The Paris.", "The Paris", " Paris"),
            Ok(-0.5)
        );
        assert!(continuation_logprob(&l, full, full, "A The capital Paris").is_err());
    }
}
