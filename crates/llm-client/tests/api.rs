//! API backends against a scripted loopback server: retries, timeouts, typed errors, limits,
//! usage, and the OpenAI and Gemini wire formats. Nothing here leaves 127.0.0.1.

#[path = "support/http.rs"]
mod http;

use std::time::{Duration, Instant};

use http::{completion_body, Reply, ScriptServer};
use llm_client::api::{GeminiModel, OpenAiModel, RetryPolicy};
use llm_client::{ApiOptions, GenerateParams, LanguageModel, LlmError, ModelSpec, Prompt};

/// Short timeouts and backoffs, so each failure case ends in well under a few seconds.
fn fast() -> ApiOptions {
    ApiOptions {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_millis(400),
        retry: RetryPolicy {
            max_retries: 4,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            max_retry_after: Duration::from_secs(2),
        },
        ..ApiOptions::default()
    }
}

fn compatible(server: &ScriptServer, options: &ApiOptions) -> OpenAiModel {
    let spec = ModelSpec::parse(&format!("openai-compatible:{}#m", server.base_url())).unwrap();
    OpenAiModel::new(&spec, None, options).unwrap()
}

async fn generate(model: &OpenAiModel) -> llm_client::Result<llm_client::Completion> {
    model
        .generate(&Prompt::Text("Hi".into()), &GenerateParams::greedy(4))
        .await
}

#[tokio::test]
async fn retry_after_is_honoured_then_200() {
    let server = ScriptServer::start(|n, _| match n {
        0 => Reply::Http(429, vec![("retry-after", "1".into())], "{}".into()),
        _ => Reply::ok(completion_body(" there")),
    })
    .await;
    let start = Instant::now();
    let c = generate(&compatible(&server, &fast())).await.unwrap();
    let took = start.elapsed();
    assert_eq!(c.text, " there");
    assert_eq!(server.hits(), 2);
    assert!(
        took >= Duration::from_millis(950),
        "Retry-After ignored: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[tokio::test]
async fn three_503s_then_200() {
    let server = ScriptServer::start(|n, _| match n {
        0..=2 => Reply::Http(503, vec![], r#"{"error":{"message":"busy"}}"#.into()),
        _ => Reply::ok(completion_body("ok")),
    })
    .await;
    let model = compatible(&server, &fast());
    let c = generate(&model).await.unwrap();
    assert_eq!(c.text, "ok");
    // Exact: -0.5 is a power of two, the same in JSON text, f64 and f32.
    assert_eq!(c.logprobs, vec![-0.5, -0.5]);
    assert_eq!(server.hits(), 4);
    let usage = model.usage();
    assert_eq!(
        (usage.requests, usage.prompt_tokens, usage.completion_tokens),
        (1, 3, 2)
    );
}

#[tokio::test]
async fn retries_give_up_with_the_last_status() {
    let server = ScriptServer::start(|_, _| Reply::Http(503, vec![], "{}".into())).await;
    let err = generate(&compatible(&server, &fast())).await.unwrap_err();
    assert!(
        matches!(
            err,
            LlmError::Http {
                status: 503,
                attempts: 5,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(server.hits(), 5);
}

#[tokio::test]
async fn a_stalled_response_times_out() {
    let server = ScriptServer::start(|_, _| Reply::Stall).await;
    let options = ApiOptions {
        retry: RetryPolicy {
            max_retries: 1,
            ..fast().retry
        },
        ..fast()
    };
    let start = Instant::now();
    let err = generate(&compatible(&server, &options)).await.unwrap_err();
    assert!(
        matches!(err, LlmError::Timeout { attempts: 2, .. }),
        "{err}"
    );
    assert_eq!(server.hits(), 2);
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_connection_reset_is_retried() {
    let server = ScriptServer::start(|n, _| match n {
        0 => Reply::Reset,
        _ => Reply::ok(completion_body("ok")),
    })
    .await;
    assert_eq!(
        generate(&compatible(&server, &fast())).await.unwrap().text,
        "ok"
    );
    assert_eq!(server.hits(), 2);

    let always = ScriptServer::start(|_, _| Reply::Reset).await;
    let err = generate(&compatible(&always, &fast())).await.unwrap_err();
    assert!(
        matches!(err, LlmError::Connection { attempts: 5, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn malformed_json_is_a_typed_error() {
    let server = ScriptServer::start(|_, _| Reply::ok("{\"choices\": [")).await;
    let err = generate(&compatible(&server, &fast())).await.unwrap_err();
    assert!(matches!(err, LlmError::BadResponse { .. }), "{err}");
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn a_400_is_not_retried() {
    let server = ScriptServer::start(|_, _| {
        Reply::Http(
            400,
            vec![],
            r#"{"error":{"message":"max_tokens is too large"}}"#.into(),
        )
    })
    .await;
    let err = generate(&compatible(&server, &fast())).await.unwrap_err();
    match &err {
        LlmError::Http {
            status: 400,
            attempts: 1,
            message,
            ..
        } => assert_eq!(message, "max_tokens is too large"),
        other => panic!("{other}"),
    }
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn requests_in_flight_stay_under_the_limit() {
    let server = ScriptServer::start(|_, _| {
        Reply::After(
            Duration::from_millis(30),
            Box::new(Reply::ok(completion_body("x"))),
        )
    })
    .await;
    let options = ApiOptions {
        max_in_flight: 3,
        ..fast()
    };
    let model = compatible(&server, &options);
    let calls = (0..12).map(|_| generate(&model));
    for r in futures_util::future::join_all(calls).await {
        r.unwrap();
    }
    assert_eq!(server.hits(), 12);
    assert!(server.max_in_flight() <= 3, "{}", server.max_in_flight());
    assert_eq!(model.usage().requests, 12);
}

#[tokio::test]
async fn requests_per_minute_spaces_requests() {
    let server = ScriptServer::start(|_, _| Reply::ok(completion_body("x"))).await;
    // 600 a minute: one every 100 ms, so 4 requests take at least 300 ms.
    let options = ApiOptions {
        requests_per_minute: Some(600),
        ..fast()
    };
    let model = compatible(&server, &options);
    let start = Instant::now();
    let calls = (0..4).map(|_| generate(&model));
    futures_util::future::join_all(calls).await;
    assert!(
        start.elapsed() >= Duration::from_millis(290),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn token_prompts_are_sent_as_id_lists() {
    let server = ScriptServer::start(|_, _| Reply::ok(completion_body("x"))).await;
    let model = compatible(&server, &fast());
    let params = GenerateParams {
        stop: vec!["\n".into()],
        ..GenerateParams::greedy(3)
    };
    model
        .generate(&Prompt::Tokens(vec![2, 651, 6037]), &params)
        .await
        .unwrap();
    let body = server.seen()[0].json();
    assert_eq!(body["prompt"], serde_json::json!([2, 651, 6037]));
    assert_eq!(body["model"], "m");
    assert_eq!(body["max_tokens"], 3);
    assert_eq!(body["stop"], serde_json::json!(["\n"]));
    assert!(server.seen()[0].head.starts_with("POST /v1/completions "));
}

#[tokio::test]
async fn score_sums_the_echoed_continuation_tokens() {
    let server = ScriptServer::start(|_, seen| {
        let prompts = seen.json()["prompt"].clone();
        let choices: Vec<_> = prompts
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let last = p.as_str().unwrap().rsplit(' ').next().unwrap().to_string();
                serde_json::json!({
                    "index": i, "text": p, "finish_reason": "length",
                    "logprobs": {
                        "tokens": ["<s>", "The", " capital", " is", format!(" {last}")],
                        "token_logprobs": [null, -1.0, -2.0, -3.0, if last == "Paris" { -0.25 } else { -4.0 }],
                    },
                })
            })
            .collect();
        Reply::ok(serde_json::json!({ "choices": choices }).to_string())
    })
    .await;
    let model = compatible(&server, &fast());
    let conts = [" Paris".to_string(), String::new(), " Rome".to_string()];
    let scores = model
        .score(&Prompt::Text("The capital is".into()), &conts)
        .await
        .unwrap();
    // Exact: one-token continuations of dyadic logprobs, no rounding anywhere.
    assert_eq!(scores, vec![-0.25, 0.0, -4.0]);
    let body = server.seen()[0].json();
    assert_eq!(body["echo"], true);
    assert_eq!(body["max_tokens"], 0);
    assert_eq!(
        body["prompt"],
        serde_json::json!(["The capital is Paris", "The capital is Rome"])
    );
    // Scoring needs text: a token prompt is a clear error, not a wrong number.
    let err = model
        .score(&Prompt::Tokens(vec![1, 2]), &conts)
        .await
        .unwrap_err();
    assert!(matches!(err, LlmError::Unsupported { .. }), "{err}");
}

#[tokio::test]
async fn openai_chat_models_use_the_chat_endpoint_and_cannot_score() {
    let server = ScriptServer::start(|_, _| {
        Reply::ok(
            serde_json::json!({
                "choices": [{ "index": 0, "message": { "role": "assistant", "content": "Paris" },
                              "finish_reason": "stop",
                              "logprobs": { "content": [{ "token": "Paris", "logprob": -0.1 }] } }],
                "usage": { "prompt_tokens": 9, "completion_tokens": 1 },
            })
            .to_string(),
        )
    })
    .await;
    let options = ApiOptions {
        base_url: Some(server.base_url()),
        ..fast()
    };
    let spec = ModelSpec::parse("openai:gpt-4o-mini").unwrap();
    let model = OpenAiModel::new(&spec, None, &options).unwrap();
    let c = generate(&model).await.unwrap();
    assert_eq!(
        (c.text.as_str(), c.logprobs.as_slice()),
        ("Paris", &[-0.1f32][..])
    );
    let seen = &server.seen()[0];
    assert!(seen.head.starts_with("POST /v1/chat/completions "));
    assert_eq!(seen.json()["max_completion_tokens"], 4);
    assert_eq!(seen.json()["messages"][0]["role"], "user");
    let err = model
        .score(&Prompt::Text("a".into()), &["b".into()])
        .await
        .unwrap_err();
    assert!(matches!(err, LlmError::Unsupported { .. }), "{err}");
}

#[tokio::test]
async fn gemini_sends_its_knobs_and_reads_candidates() {
    let server = ScriptServer::start(|_, _| {
        Reply::ok(
            serde_json::json!({
                "candidates": [
                    { "content": { "role": "model", "parts": [{ "text": "Par" }, { "text": "is" }] }, "finishReason": "STOP" },
                    { "content": { "role": "model", "parts": [{ "text": "Lyon" }] }, "finishReason": "MAX_TOKENS" },
                ],
                "usageMetadata": { "promptTokenCount": 5, "candidatesTokenCount": 3 },
            })
            .to_string(),
        )
    })
    .await;
    let options = ApiOptions {
        base_url: Some(format!("http://{}/v1beta", server.addr)),
        top_k: Some(40),
        candidate_count: 2,
        ..fast()
    };
    let spec = ModelSpec::parse("gemini:gemini-2.0-flash").unwrap();
    let key = llm_client::api::ApiKey::new("gemini-test-key");
    let model = GeminiModel::new(&spec, Some(key), &options).unwrap();
    let params = GenerateParams {
        temperature: 0.7,
        top_p: 0.9,
        ..GenerateParams::greedy(8)
    };
    let all = model
        .generate_candidates(&Prompt::Text("Capital of France?".into()), &params)
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].text, "Paris");
    assert_eq!(
        all[0].finish_reason,
        llm_client::FinishReason::EndOfSequence
    );
    assert_eq!(all[1].finish_reason, llm_client::FinishReason::Length);
    assert_eq!(model.usage().completion_tokens, 3);
    let seen = &server.seen()[0];
    assert!(
        seen.head
            .starts_with("POST /v1beta/models/gemini-2.0-flash:generateContent "),
        "{}",
        seen.head
    );
    assert!(seen.head.contains("x-goog-api-key: gemini-test-key"));
    let body = seen.json();
    let config = &body["generationConfig"];
    assert_eq!(config["topK"], 40);
    assert_eq!(config["candidateCount"], 2);
    assert_eq!(config["maxOutputTokens"], 8);
    // The temperature is an f32: 0.7 arrives within half an f32 ulp (2^-25 ~ 3e-8) of 0.7,
    // whether written as f32 or widened to f64; f32::EPSILON (2^-23) bounds that.
    assert!((config["temperature"].as_f64().unwrap() - 0.7).abs() < f32::EPSILON as f64);
    assert_eq!(
        body["contents"][0]["parts"][0]["text"],
        "Capital of France?"
    );
    let err = model
        .score(&Prompt::Text("a".into()), &["b".into()])
        .await
        .unwrap_err();
    assert!(matches!(err, LlmError::Unsupported { .. }), "{err}");
}
