//! A local model behind an OpenAI-compatible HTTP API (`spae-icl serve`): `/v1/models`,
//! `/v1/completions` (logprobs, `echo` for scoring, token-id prompts), `/v1/chat/completions`,
//! and `stream: true` as server-sent events. Bad requests get a 4xx with OpenAI's error JSON.
//!
//! The model runs on blocking threads; one `LocalModel` computes one request at a time.

mod wire;

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::mpsc;

use crate::error::LlmError;
use crate::local::LocalModel;
use crate::{ChatMessage, Completion, FinishReason, GenerateParams, LanguageModel, Prompt};
use wire::*;

struct AppState {
    model: Arc<LocalModel>,
    /// The name clients use: the model's own (`local:gemma3-270m`); the part after the
    /// scheme (`gemma3-270m`) is accepted too.
    id: String,
    created: u64,
    next_id: AtomicU64,
}

impl AppState {
    fn check_model(&self, asked: &str) -> Result<(), ApiError> {
        let short = self.id.split_once(':').map(|(_, s)| s);
        if asked == self.id || Some(asked) == short {
            Ok(())
        } else {
            Err(ApiError {
                status: StatusCode::NOT_FOUND,
                message: format!(
                    "model {asked:?} does not exist; this server has {:?}",
                    self.id
                ),
                param: Some("model"),
                code: Some("model_not_found"),
            })
        }
    }

    fn request_id(&self, prefix: &str) -> String {
        format!("{prefix}-{}", self.next_id.fetch_add(1, Ordering::Relaxed))
    }
}

/// The routes, for a server of `model`.
pub fn router(model: Arc<LocalModel>) -> Router {
    let state = Arc::new(AppState {
        id: model.name().to_string(),
        model,
        created: unix_now(),
        next_id: AtomicU64::new(1),
    });
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat))
        .fallback(|| async {
            ApiError::bad(StatusCode::NOT_FOUND, "no such endpoint".into(), None)
        })
        .with_state(state)
}

/// Serve `model` on `listener` until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    model: Arc<LocalModel>,
) -> std::io::Result<()> {
    axum::serve(listener, router(model)).await
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// An error answer in OpenAI's shape.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
    param: Option<&'static str>,
    code: Option<&'static str>,
}

impl ApiError {
    fn bad(status: StatusCode, message: String, param: Option<&'static str>) -> Self {
        Self {
            status,
            message,
            param,
            code: None,
        }
    }

    fn invalid(message: impl Into<String>, param: Option<&'static str>) -> Self {
        Self::bad(StatusCode::BAD_REQUEST, message.into(), param)
    }
}

impl From<LlmError> for ApiError {
    fn from(e: LlmError) -> Self {
        let (status, code) = match &e {
            LlmError::ContextOverflow { .. } => {
                (StatusCode::BAD_REQUEST, Some("context_length_exceeded"))
            }
            LlmError::TokenOutOfRange { .. }
            | LlmError::InvalidParams(_)
            | LlmError::EmptyPrompt => (StatusCode::BAD_REQUEST, None),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, None),
        };
        Self {
            status,
            message: e.to_string(),
            param: None,
            code,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = if self.status.is_client_error() {
            "invalid_request_error"
        } else {
            "server_error"
        };
        let body = ErrorResponse {
            error: ErrorBody {
                message: self.message,
                kind,
                param: self.param,
                code: self.code,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError {
        status: StatusCode::BAD_REQUEST,
        message: format!("could not parse the JSON body: {e}"),
        param: None,
        code: Some("invalid_json"),
    })
}

fn check_n(n: Option<u32>) -> Result<(), ApiError> {
    match n {
        None | Some(1) => Ok(()),
        Some(_) => Err(ApiError::invalid("only n = 1 is supported", Some("n"))),
    }
}

/// Run blocking model work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, LlmError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(e) => Err(ApiError::bad(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the model task failed: {e}"),
            None,
        )),
    }
}

async fn models(State(state): State<Arc<AppState>>) -> Json<ModelList> {
    Json(ModelList {
        object: "list",
        data: vec![ModelEntry {
            id: state.id.clone(),
            object: "model",
            created: state.created,
            owned_by: "spae-icl",
            max_model_len: state.model.context_length(),
        }],
    })
}

/// `finish_reason` and vLLM's `stop_reason` (the stop string that matched).
fn finish(
    c: &Completion,
    model: &LocalModel,
    params: &GenerateParams,
) -> (&'static str, Option<String>) {
    match c.finish_reason {
        FinishReason::Length | FinishReason::ContextFull => ("length", None),
        FinishReason::EndOfSequence => ("stop", None),
        FinishReason::Stop => {
            let full = model.detokenize(&c.tokens).unwrap_or_default();
            let tail = full.get(c.text.len()..).unwrap_or("");
            let hit = params.stop.iter().find(|s| tail.starts_with(s.as_str()));
            ("stop", hit.cloned())
        }
    }
}

/// Token texts, logprobs and character offsets, for `logprobs` answers.
fn push_tokens(
    model: &LocalModel,
    lp: &mut CompletionLogprobs,
    offset: &mut usize,
    ids: &[u32],
    logprobs: impl Iterator<Item = Option<f32>>,
) -> Result<(), LlmError> {
    for (&id, logprob) in ids.iter().zip(logprobs) {
        let text = model.detokenize(&[id])?;
        lp.text_offset.push(*offset);
        *offset += text.chars().count();
        lp.tokens.push(text);
        lp.token_logprobs.push(logprob);
    }
    Ok(())
}

/// One choice of `/v1/completions`, with its prompt and completion token counts.
fn complete_one(
    model: &LocalModel,
    prompt: &Prompt,
    params: &GenerateParams,
    echo: bool,
    want_logprobs: bool,
    index: usize,
) -> Result<(CompletionChoice, usize, usize), LlmError> {
    let ids = model.prompt_ids(prompt)?;
    let context = model.context_length();
    if ids.len() > context {
        return Err(LlmError::ContextOverflow {
            needed: ids.len(),
            context,
        });
    }
    let completion = if params.max_tokens > 0 {
        model.generate_tokens(&ids, params)?
    } else {
        Completion {
            text: String::new(),
            tokens: Vec::new(),
            logprobs: Vec::new(),
            finish_reason: FinishReason::Length,
        }
    };
    // A BOS the server added is not part of the prompt's text, so it is not echoed.
    let echo_from = match prompt {
        Prompt::Text(_) => usize::from(model.tokenizer().bos_to_add().is_some()),
        Prompt::Tokens(_) => 0,
    };
    let mut text = String::new();
    let mut logprobs = want_logprobs.then(CompletionLogprobs::default);
    let mut offset = 0;
    if echo {
        match prompt {
            Prompt::Text(t) => text.push_str(t),
            Prompt::Tokens(_) => text.push_str(&model.detokenize(&ids)?),
        }
        if let Some(lp) = logprobs.as_mut() {
            let predicted = model.prompt_logprobs(&ids)?;
            let per_token = (echo_from..ids.len()).map(|i| i.checked_sub(1).map(|j| predicted[j]));
            push_tokens(model, lp, &mut offset, &ids[echo_from..], per_token)?;
        }
    }
    text.push_str(&completion.text);
    if let Some(lp) = logprobs.as_mut() {
        let generated = completion.logprobs.iter().map(|&x| Some(x));
        push_tokens(model, lp, &mut offset, &completion.tokens, generated)?;
    }
    let (finish_reason, stop_reason) = finish(&completion, model, params);
    let choice = CompletionChoice {
        index,
        text,
        logprobs,
        finish_reason: Some(finish_reason),
        stop_reason,
    };
    Ok((choice, ids.len(), completion.tokens.len()))
}

fn stop_list(stop: Option<StopInput>) -> Vec<String> {
    stop.map(StopInput::into_vec).unwrap_or_default()
}

fn validated(params: GenerateParams) -> Result<GenerateParams, ApiError> {
    params.validate().map_err(ApiError::from)?;
    Ok(params)
}

async fn completions(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: CompletionRequest = parse(&body)?;
    state.check_model(&req.model)?;
    check_n(req.n)?;
    let prompts: Vec<Prompt> = match req.prompt {
        PromptInput::Text(t) => vec![Prompt::Text(t)],
        PromptInput::Tokens(ids) => vec![Prompt::Tokens(ids)],
        PromptInput::Texts(ts) => ts.into_iter().map(Prompt::Text).collect(),
        PromptInput::TokenLists(ls) => ls.into_iter().map(Prompt::Tokens).collect(),
    };
    if prompts.is_empty() {
        return Err(ApiError::invalid(
            "the prompt list is empty",
            Some("prompt"),
        ));
    }
    // OpenAI's defaults.
    let params = validated(GenerateParams {
        max_tokens: req.max_tokens.unwrap_or(16),
        temperature: req.temperature.unwrap_or(1.0),
        top_p: req.top_p.unwrap_or(1.0),
        seed: req.seed.unwrap_or(0),
        stop: stop_list(req.stop),
        allowed_tokens: None,
    })?;
    let want_logprobs = req.logprobs.as_ref().is_some_and(LogprobsInput::wanted);
    let id = state.request_id("cmpl");
    let model_name = state.id.clone();
    if req.stream {
        let [prompt] = <[Prompt; 1]>::try_from(prompts)
            .map_err(|_| ApiError::invalid("stream takes one prompt", Some("prompt")))?;
        let ids = state.model.prompt_ids(&prompt)?;
        let echo = match (&prompt, req.echo) {
            (Prompt::Text(t), true) => t.clone(),
            (Prompt::Tokens(_), true) => state.model.detokenize(&ids)?,
            (_, false) => String::new(),
        };
        let chunk = move |text: &str, finish: Option<&'static str>| {
            serde_json::json!({
                "id": id, "object": "text_completion", "created": unix_now(), "model": model_name,
                "choices": [{ "index": 0, "text": text, "logprobs": null, "finish_reason": finish }],
            })
        };
        return Ok(stream_answer(&state.model, ids, params, echo, chunk));
    }
    let model = Arc::clone(&state.model);
    let echo = req.echo;
    let results = blocking(move || {
        prompts
            .iter()
            .enumerate()
            .map(|(i, p)| complete_one(&model, p, &params, echo, want_logprobs, i))
            .collect::<Result<Vec<_>, _>>()
    })
    .await?;
    let prompt_tokens = results.iter().map(|r| r.1).sum();
    let completion_tokens = results.iter().map(|r| r.2).sum();
    Ok(Json(CompletionResponse {
        id: state.request_id("cmpl"),
        object: "text_completion",
        created: unix_now(),
        model: state.id.clone(),
        choices: results.into_iter().map(|r| r.0).collect(),
        usage: WireUsage::new(prompt_tokens, completion_tokens),
    })
    .into_response())
}

async fn chat(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Response, ApiError> {
    let req: ChatRequest = parse(&body)?;
    state.check_model(&req.model)?;
    check_n(req.n)?;
    let messages: Vec<ChatMessage> = req
        .messages
        .into_iter()
        .map(MessageInput::resolve)
        .collect::<Result<_, _>>()
        .map_err(|m| ApiError::invalid(m, Some("messages")))?;
    if messages.is_empty() {
        return Err(ApiError::invalid("no messages", Some("messages")));
    }
    let prompt = Prompt::Text(state.model.chat_template().render(&messages));
    let ids = state.model.prompt_ids(&prompt)?;
    let context = state.model.context_length();
    if ids.len() >= context {
        return Err(LlmError::ContextOverflow {
            needed: ids.len() + 1,
            context,
        }
        .into());
    }
    let params = validated(GenerateParams {
        // Without a limit, the answer may fill the context.
        max_tokens: req
            .max_completion_tokens
            .or(req.max_tokens)
            .unwrap_or(context - ids.len()),
        temperature: req.temperature.unwrap_or(1.0),
        top_p: req.top_p.unwrap_or(1.0),
        seed: req.seed.unwrap_or(0),
        stop: stop_list(req.stop),
        allowed_tokens: None,
    })?;
    let id = state.request_id("chatcmpl");
    let model_name = state.id.clone();
    if req.stream {
        let mut first = true;
        let chunk = move |text: &str, finish: Option<&'static str>| {
            let delta = match (first, finish) {
                (_, Some(_)) => serde_json::json!({}),
                (true, None) => serde_json::json!({ "role": "assistant", "content": text }),
                (false, None) => serde_json::json!({ "content": text }),
            };
            first = false;
            serde_json::json!({
                "id": id, "object": "chat.completion.chunk", "created": unix_now(), "model": model_name,
                "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }],
            })
        };
        return Ok(stream_answer(
            &state.model,
            ids,
            params,
            String::new(),
            chunk,
        ));
    }
    let model = Arc::clone(&state.model);
    let want_logprobs = req.logprobs;
    let (completion, params, model) = blocking(move || {
        let c = model.generate_tokens(&ids, &params)?;
        Ok((c, params, model))
    })
    .await?;
    let logprobs = if want_logprobs {
        let mut content = Vec::new();
        for (&tok, &logprob) in completion.tokens.iter().zip(&completion.logprobs) {
            let token = model.detokenize(&[tok])?;
            content.push(ChatTokenLogprob {
                bytes: token.as_bytes().to_vec(),
                token,
                logprob,
                top_logprobs: Vec::new(),
            });
        }
        Some(ChatLogprobs { content })
    } else {
        None
    };
    let (finish_reason, stop_reason) = finish(&completion, &model, &params);
    let prompt_tokens = model.prompt_ids(&prompt)?.len();
    Ok(Json(ChatResponse {
        id,
        object: "chat.completion",
        created: unix_now(),
        model: model_name,
        usage: WireUsage::new(prompt_tokens, completion.tokens.len()),
        choices: vec![ChatChoice {
            index: 0,
            message: AssistantMessage {
                role: "assistant",
                content: completion.text,
            },
            logprobs,
            finish_reason,
            stop_reason,
        }],
    })
    .into_response())
}

/// Stream a generation as server-sent events: `chunk(text, None)` for each piece of text
/// (`prefix` first, if any), `chunk("", Some(reason))` at the end, then `[DONE]`.
fn stream_answer(
    model: &Arc<LocalModel>,
    ids: Vec<u32>,
    params: GenerateParams,
    prefix: String,
    mut chunk: impl FnMut(&str, Option<&'static str>) -> serde_json::Value + Send + 'static,
) -> Response {
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let (events_tx, events_rx) = mpsc::unbounded_channel::<String>();
    let model = Arc::clone(model);
    if !prefix.is_empty() {
        let _ = events_tx.send(chunk(&prefix, None).to_string());
    }
    let done = tokio::task::spawn_blocking(move || {
        let result = generate_streaming(&model, &ids, &params, &tx);
        result.map(|c| finish(&c, &model, &params).0)
    });
    tokio::spawn(async move {
        while let Some(text) = rx.recv().await {
            let _ = events_tx.send(chunk(&text, None).to_string());
        }
        let last = match done.await {
            Ok(Ok(reason)) => chunk("", Some(reason)).to_string(),
            Ok(Err(e)) => {
                serde_json::json!({ "error": { "message": e.to_string(), "type": "server_error" } })
                    .to_string()
            }
            Err(e) => {
                serde_json::json!({ "error": { "message": e.to_string(), "type": "server_error" } })
                    .to_string()
            }
        };
        let _ = events_tx.send(last);
        let _ = events_tx.send("[DONE]".to_string());
    });
    let stream = futures_util::stream::unfold(events_rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|data| (Ok::<_, Infallible>(Event::default().data(data)), rx))
    });
    Sse::new(stream).into_response()
}

/// `generate_tokens`, sending each new piece of text as it becomes final: text that could
/// still turn into a stop string, or a character cut mid-way, waits for the next token.
fn generate_streaming(
    model: &LocalModel,
    ids: &[u32],
    params: &GenerateParams,
    tx: &mpsc::UnboundedSender<String>,
) -> Result<Completion, LlmError> {
    let tokenizer = model.tokenizer();
    let hold = params
        .stop
        .iter()
        .map(String::len)
        .max()
        .unwrap_or(1)
        .saturating_sub(1);
    let mut generated = Vec::new();
    let mut sent = 0;
    let completion = model.generate_tokens_with(ids, params, &mut |id, _| {
        if tokenizer.is_eos(id) {
            return;
        }
        generated.push(id);
        let Ok(text) = tokenizer.decode(&generated) else {
            return;
        };
        let mut safe = text.len().saturating_sub(hold);
        if text.ends_with('\u{FFFD}') {
            safe = safe.min(text.len() - '\u{FFFD}'.len_utf8());
        }
        while !text.is_char_boundary(safe) {
            safe -= 1;
        }
        if safe > sent {
            let _ = tx.send(text[sent..safe].to_string());
            sent = safe;
        }
    })?;
    if let Some(rest) = completion.text.get(sent..).filter(|r| !r.is_empty()) {
        let _ = tx.send(rest.to_string());
    }
    Ok(completion)
}
