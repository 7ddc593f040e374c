//! The OpenAI-compatible server over loopback: the OpenAI-compatible backend gets the same
//! greedy text, logprobs and scores as the local model called directly; streaming; 4xx errors.

mod common;

use std::sync::Arc;

use llm_client::api::OpenAiModel;
use llm_client::{
    ApiOptions, ChatMessage, GenerateParams, KnownModel, LanguageModel, LocalModel, ModelSpec,
    Prompt,
};

/// One model for both tests (each test has its own runtime and server), without prefix reuse:
/// every request is then a fresh pass, so a request served over HTTP runs the same arithmetic
/// in the same order as the same request made directly, and must give the same bits. (Prefix
/// reuse has its own tests in `models.rs`.)
fn gemma() -> Arc<LocalModel> {
    static MODEL: std::sync::OnceLock<Arc<LocalModel>> = std::sync::OnceLock::new();
    Arc::clone(MODEL.get_or_init(|| Arc::new(common::load(KnownModel::Gemma3_270m, false))))
}

async fn start(model: Arc<LocalModel>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(llm_client::server::serve(listener, model));
    format!("http://{addr}/v1")
}

fn client(base: &str) -> OpenAiModel {
    let spec = ModelSpec::parse(&format!("openai-compatible:{base}#gemma3-270m")).unwrap();
    OpenAiModel::new(&spec, None, &ApiOptions::default()).unwrap()
}

async fn post(base: &str, path: &str, body: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_backend_matches_the_local_model() {
    let local = gemma();
    let base = start(Arc::clone(&local)).await;
    let remote = client(&base);
    let params = GenerateParams::greedy(8);

    for prompt in [
        Prompt::Text("The capital of France is".into()),
        Prompt::Tokens(local.tokenize("Once upon a time").unwrap()),
    ] {
        let direct = local.generate(&prompt, &params).await.unwrap();
        let served = remote.generate(&prompt, &params).await.unwrap();
        assert_eq!(served.text, direct.text);
        assert_eq!(served.finish_reason, direct.finish_reason);
        // Bit for bit: the same computation (see `gemma`), and f32 logprobs
        // survive JSON exactly (written in full, read back to the same f32).
        assert_eq!(served.logprobs, direct.logprobs, "generate logprobs");
    }
    let prompt = Prompt::Text("The capital of France is".into());
    let conts = [" Paris".to_string(), " Rome".to_string()];
    let direct = local.score(&prompt, &conts).await.unwrap();
    let served = remote.score(&prompt, &conts).await.unwrap();
    // Not the same computation: the server scores by `echo`, one pass over prompt and
    // continuation from position 0, `score` runs from the last prompt position; and the
    // client sums the token logprobs in f32, `score` in f64. So equal to the bound that
    // follows from `common::LOGIT_TOL` (2 logit bounds per token, plus the sums' rounding).
    let ids = local.prompt_ids(&prompt).unwrap();
    for (i, cont) in conts.iter().enumerate() {
        let cont_ids = local.tokenize(cont).unwrap();
        let mut all = ids.clone();
        all.extend_from_slice(&cont_ids);
        let rows = local.logits(&all, ids.len() - 1).unwrap();
        // Log-probabilities are <= 0: their sum of |.| is |direct[i]|, however it splits.
        let terms = vec![direct[i] / cont_ids.len() as f32; cont_ids.len()];
        let bound = common::logprob_sum_bound(&rows[..cont_ids.len()], &terms);
        assert!(
            (served[i] - direct[i]).abs() <= bound,
            "score of {cont:?}: served {} vs direct {}, more than {bound} apart",
            served[i],
            direct[i]
        );
    }
    // " Paris" wins by several nats, far more than the bound.
    assert!(served[0] > served[1], "{served:?}");

    let chat = [ChatMessage::user("Say hello.")];
    let direct = local.chat(&chat, &params).await.unwrap();
    let served = remote.chat(&chat, &params).await.unwrap();
    assert_eq!(served.text, direct.text);
    assert_eq!(served.logprobs, direct.logprobs, "chat logprobs");
    assert!(remote.usage().completion_tokens > 0);

    // Streaming: the pieces add up to the same text, then [DONE].
    let body = r#"{"model":"gemma3-270m","prompt":"The capital of France is","max_tokens":8,"temperature":0,"stream":true}"#;
    let (status, sse) = post(&base, "/completions", body).await;
    assert_eq!(status, 200);
    let events: Vec<&str> = sse
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"));
    let mut text = String::new();
    for e in &events[..events.len() - 1] {
        let v: serde_json::Value = serde_json::from_str(e).unwrap();
        text.push_str(v["choices"][0]["text"].as_str().unwrap());
    }
    let direct = local.generate(&prompt, &params).await.unwrap();
    assert_eq!(text, direct.text);

    let body = r#"{"model":"local:gemma3-270m","messages":[{"role":"user","content":"Say hello."}],"max_tokens":8,"temperature":0,"stream":true}"#;
    let (status, sse) = post(&base, "/chat/completions", body).await;
    assert_eq!(status, 200);
    let mut text = String::new();
    for e in sse.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if e != "[DONE]" {
            let v: serde_json::Value = serde_json::from_str(e).unwrap();
            text.push_str(v["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
        }
    }
    assert_eq!(text, local.chat(&chat, &params).await.unwrap().text);

    let (status, models) = reqwest::get(format!("{base}/models"))
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap();
    assert_eq!(status, 200);
    let models: serde_json::Value = models.json().await.unwrap();
    assert_eq!(models["data"][0]["id"], "local:gemma3-270m");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_openai_shaped_4xx() {
    let local = gemma();
    let context = local.context_length();
    let base = start(local).await;
    let too_long = serde_json::json!({ "model": "gemma3-270m", "prompt": vec![2; context + 1] });
    for (path, body, status, code) in [
        (
            "/completions",
            r#"{"model":"gpt-9","prompt":"hi"}"#.to_string(),
            404,
            "model_not_found",
        ),
        (
            "/completions",
            r#"{"model":"gemma3-270m","prompt":"#.to_string(),
            400,
            "invalid_json",
        ),
        (
            "/completions",
            too_long.to_string(),
            400,
            "context_length_exceeded",
        ),
        (
            "/chat/completions",
            r#"{"model":"gemma3-270m","messages":[{"role":"robot","content":"x"}]}"#.to_string(),
            400,
            "",
        ),
        (
            "/completions",
            r#"{"model":"gemma3-270m","prompt":"hi","top_p":0}"#.to_string(),
            400,
            "",
        ),
        ("/nothing", "{}".to_string(), 404, ""),
    ] {
        let (got, text) = post(&base, path, &body).await;
        assert_eq!(got, status, "{path} {body}: {text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{text}"
        );
        if !code.is_empty() {
            assert_eq!(v["error"]["code"], code, "{text}");
        }
    }
}
