//! Peak memory of the local Gemma 3 270M at 4k context (target: under 1.5 GB). A file of its
//! own: the test process holds this one model and nothing else, so its high-water mark is the
//! model's.

#![cfg(target_os = "linux")]

use llm_client::{
    GenerateParams, KnownModel, LanguageModel, LoadOptions, LocalModel, ModelSpec, Prompt,
};

/// The process's peak resident set (VmHWM), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM line");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmHWM value");
    kb * 1024
}

#[test]
fn gemma3_at_4k_context_stays_under_1_5_gb() {
    let options = LoadOptions::default();
    let model = LocalModel::load(&ModelSpec::Local(KnownModel::Gemma3_270m), &options)
        .expect("loading gemma3-270m");
    let text = "The quick brown fox jumps over the lazy dog while seven sailors sing. ".repeat(400);
    let mut ids = model.prompt_ids(&Prompt::Text(text)).expect("ids");
    assert!(ids.len() > 4096, "{} tokens", ids.len());
    ids.truncate(4096);
    let done = block_on(model.generate(&Prompt::Tokens(ids), &GenerateParams::greedy(4)))
        .expect("generate");
    assert_eq!(done.tokens.len(), 4);
    let peak = peak_rss();
    eprintln!(
        "peak resident memory at 4,096 tokens: {:.2} GB",
        peak as f64 / 1e9
    );
    assert!(
        peak < 1_500_000_000,
        "peak resident memory {:.2} GB at 4,096 tokens",
        peak as f64 / 1e9
    );
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(f)
}
