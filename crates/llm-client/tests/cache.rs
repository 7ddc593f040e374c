//! The response cache: a rerun makes no request, and a process killed with SIGKILL leaves a
//! cache that opens and keeps every answer it had finished.

#[path = "support/http.rs"]
mod http;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use http::{completion_body, Reply, ScriptServer};
use llm_client::api::OpenAiModel;
use llm_client::{
    ApiOptions, CachedModel, ChatMessage, GenerateParams, LanguageModel, ModelSpec, Prompt,
    ResponseCache,
};

/// Answers `/completions` with the prompt reversed, after `delay`.
async fn echo_server(delay: Duration) -> ScriptServer {
    ScriptServer::start(move |_, seen| {
        let body = seen.json();
        let text = match body.get("prompt") {
            Some(serde_json::Value::String(p)) => p.chars().rev().collect(),
            _ => "chat answer".to_string(),
        };
        let answer = if seen.head.contains("/chat/") {
            serde_json::json!({ "choices": [{ "message": { "content": text }, "finish_reason": "stop" }] })
                .to_string()
        } else {
            completion_body(&text)
        };
        Reply::After(delay, Box::new(Reply::ok(answer)))
    })
    .await
}

fn cached(base_url: &str, path: &Path) -> CachedModel<OpenAiModel> {
    let spec = ModelSpec::parse(&format!("openai-compatible:{base_url}#m")).unwrap();
    let model = OpenAiModel::new(&spec, None, &ApiOptions::default()).unwrap();
    CachedModel::new(model, Arc::new(ResponseCache::open(path).unwrap()))
}

fn prompt(i: usize) -> Prompt {
    Prompt::Text(format!("prompt number {i}"))
}

#[tokio::test]
async fn a_second_identical_run_makes_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("responses.sqlite");
    let server = echo_server(Duration::ZERO).await;
    let params = GenerateParams::greedy(5);
    let chat = [ChatMessage::user("hello")];
    let run = |model: CachedModel<OpenAiModel>| {
        let (params, chat) = (params.clone(), chat.clone());
        async move {
            let mut answers = Vec::new();
            for i in 0..10 {
                answers.push(model.generate(&prompt(i), &params).await.unwrap());
            }
            answers.push(model.chat(&chat, &params).await.unwrap());
            (answers, model.stats())
        }
    };
    let (first, stats) = run(cached(&server.base_url(), &path)).await;
    assert_eq!((stats.hits, stats.misses), (0, 11));
    assert_eq!(server.hits(), 11);
    assert_eq!(first[3].text, "3 rebmun tpmorp");

    let (second, stats) = run(cached(&server.base_url(), &path)).await;
    assert_eq!(server.hits(), 11, "the rerun reached the server");
    assert_eq!((stats.hits, stats.misses), (11, 0));
    assert_eq!(first, second);

    // Other parameters are another request.
    let model = cached(&server.base_url(), &path);
    model
        .generate(&prompt(0), &GenerateParams::greedy(6))
        .await
        .unwrap();
    assert_eq!(server.hits(), 12);
}

/// The child side of `kill_9_keeps_every_completed_answer`: answers prompts one by one and
/// prints each answer once it is cached. Does nothing unless the parent set the variables.
#[tokio::test]
async fn cache_child_process() {
    let (Ok(url), Ok(path)) = (
        std::env::var("SPAE_TEST_CHILD_URL"),
        std::env::var("SPAE_TEST_CHILD_CACHE"),
    ) else {
        return;
    };
    let model = cached(&url, Path::new(&path));
    for i in 0..10_000 {
        let c = model
            .generate(&prompt(i), &GenerateParams::greedy(5))
            .await
            .unwrap();
        println!("answered {i} {}", c.text);
    }
}

#[tokio::test]
async fn kill_9_keeps_every_completed_answer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("responses.sqlite");
    let server = echo_server(Duration::from_millis(5)).await;
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "cache_child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SPAE_TEST_CHILD_URL", server.base_url())
        .env("SPAE_TEST_CHILD_CACHE", &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // Read on a thread: the server runs on this test's runtime and must keep answering.
    let reader = std::thread::spawn(move || {
        let mut answered = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some(rest) = line.strip_prefix("answered ") {
                let (i, text) = rest.split_once(' ').unwrap();
                answered.push((i.parse::<usize>().unwrap(), text.to_string()));
                if answered.len() == 25 {
                    return answered;
                }
            }
        }
        answered
    });
    let answered = loop {
        if reader.is_finished() {
            break reader.join().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    assert_eq!(answered.len(), 25, "the child stopped early");
    let before = server.hits();
    assert!(before >= 25);

    let model = cached(&server.base_url(), &path);
    assert!(model.inner().name().starts_with("openai-compatible:"));
    for (i, text) in &answered {
        let c = model
            .generate(&prompt(*i), &GenerateParams::greedy(5))
            .await
            .unwrap();
        assert_eq!(&c.text, text);
    }
    assert_eq!(server.hits(), before, "a completed answer was lost");
    assert_eq!(model.stats().hits, 25);
}
