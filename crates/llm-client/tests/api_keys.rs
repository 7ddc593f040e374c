//! A run with an API key set leaves no trace of the key in trace-level logs, in the cache
//! file or in the results, though every request carried it.

#[path = "support/http.rs"]
mod http;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{completion_body, Reply, ScriptServer};
use llm_client::api::RetryPolicy;
use llm_client::{
    ApiOptions, CachedModel, GenerateParams, LanguageModel, LoadOptions, ModelSpec, Prompt,
    ResponseCache,
};

const KEY: &str = "sk-spae-test-7f3a9c1e5b2d4086";
const KEY_VAR: &str = "SPAE_TEST_API_KEY_NEVER_LOGGED";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_key_is_never_logged_cached_or_returned() {
    let logs = Captured::default();
    let writer = logs.clone();
    // Also installs the bridge that turns the `log` records of the HTTP stack into events.
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .try_init()
        .unwrap();
    std::env::set_var(KEY_VAR, KEY);

    let server = ScriptServer::start(|n, _| match n {
        0 => Reply::Http(429, vec![("retry-after", "0".into())], "{}".into()),
        1 => Reply::Http(400, vec![], r#"{"error":{"message":"bad request"}}"#.into()),
        _ => Reply::ok(completion_body("fine")),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cache_path = dir.path().join("responses.sqlite");
    let options = LoadOptions {
        api: ApiOptions {
            api_key_env: Some(KEY_VAR.into()),
            retry: RetryPolicy {
                initial_backoff: Duration::from_millis(5),
                ..RetryPolicy::default()
            },
            ..ApiOptions::default()
        },
        ..LoadOptions::default()
    };
    let spec = ModelSpec::parse(&format!("openai-compatible:{}#m", server.base_url())).unwrap();
    let model = llm_client::load_spec(&spec, &options).unwrap();
    let model = CachedModel::new(model, Arc::new(ResponseCache::open(&cache_path).unwrap()));
    let prompt = Prompt::Text("Hi".into());

    let mut results = String::new();
    // 429 then 400: a retry and an error, both logged.
    let err = model
        .generate(&prompt, &GenerateParams::greedy(2))
        .await
        .unwrap_err();
    results.push_str(&format!("{err}\n{err:?}\n"));
    for _ in 0..2 {
        let c = model
            .generate(&prompt, &GenerateParams::greedy(3))
            .await
            .unwrap();
        results.push_str(&serde_json::to_string(&c).unwrap());
    }
    results.push_str(&format!("{:?}", model.usage()));

    // The key was sent on every request that reached the server.
    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    for s in &seen {
        assert!(
            s.head.to_ascii_lowercase().contains(&format!(
                "authorization: bearer {}",
                KEY.to_ascii_lowercase()
            )),
            "{}",
            s.head
        );
    }

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("retrying"),
        "no trace-level logs captured: {logs}"
    );
    assert!(!logs.contains(KEY), "the key is in the logs");
    assert!(!results.contains(KEY), "the key is in the results");
    drop(model);
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(
            !bytes.windows(KEY.len()).any(|w| w == KEY.as_bytes()),
            "the key is in the cache"
        );
    }
    // The key's Debug form hides it too.
    let key = llm_client::api::ApiKey::new(KEY);
    assert!(!format!("{key:?}").contains(KEY));
}
