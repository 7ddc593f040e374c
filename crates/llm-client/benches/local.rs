//! Local backend speed: prefill tokens/s at 512 and 2048 prompt tokens, decode tokens/s, and
//! what reusing a few-shot prefix saves, and what scoring candidates as branches of one call saves. `cargo bench --workspace --bench local`.
//! `eval/bench-llama-cpp.sh` runs it beside llama.cpp's `llama-bench` on the same GGUF files.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use llm_client::{GenerateParams, KnownModel, LoadOptions, LocalModel, ModelSpec, Prompt};

const TEXT: &str = "Few-shot learning lets a frozen language model pick up a task from a handful \
of examples placed in its prompt. Each example pairs an input with its answer, and the query \
comes last. ";

fn load(model: KnownModel, reuse_prefix: bool) -> LocalModel {
    let options = LoadOptions {
        reuse_prefix,
        ..LoadOptions::default()
    };
    LocalModel::load(&ModelSpec::Local(model), &options)
        .unwrap_or_else(|e| panic!("loading {}: {e}", model.asset_name()))
}

/// Exactly `n` prompt tokens of running text.
fn tokens(model: &LocalModel, n: usize) -> Vec<u32> {
    let text = TEXT.repeat(n / 20 + 2);
    let mut ids = model.prompt_ids(&Prompt::Text(text)).expect("tokenize");
    ids.truncate(n);
    assert_eq!(ids.len(), n);
    ids
}

fn bench_model(c: &mut Criterion, which: KnownModel) {
    let name = which.asset_name();
    let model = load(which, false);

    let mut group = c.benchmark_group(format!("{name}/prefill"));
    group.sample_size(10).warm_up_time(Duration::from_secs(1));
    for n in [512, 2048] {
        let ids = tokens(&model, n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &ids, |b, ids| {
            b.iter(|| model.logits(ids, ids.len() - 1).expect("prefill"))
        });
    }
    group.finish();

    // Decode: 64 greedy tokens after a 16-token prompt; prefill is a small share.
    let mut group = c.benchmark_group(format!("{name}/decode"));
    group.sample_size(10).warm_up_time(Duration::from_secs(1));
    let ids = tokens(&model, 16);
    // An end-of-sequence token would shorten the run: the count is checked below.
    let params = GenerateParams::greedy(64);
    group.throughput(Throughput::Elements(64));
    group.bench_function("64", |b| {
        b.iter(|| {
            let c = model.generate_tokens(&ids, &params).expect("generate");
            assert_eq!(c.tokens.len(), 64, "generation ended early");
        })
    });
    group.finish();

    // Few-shot-like scoring: a 480-token support set shared by every query, one 16-token query
    // and two short answers. With reuse, only the query and answers run after the first call.
    let mut group = c.benchmark_group(format!("{name}/few-shot-query"));
    group.sample_size(10).warm_up_time(Duration::from_secs(1));
    let support = tokens(&model, 480);
    let query = model
        .tokenizer()
        .encode(" Query: is a tomato a fruit? Answer:");
    let answers = vec![
        model.tokenizer().encode(" yes"),
        model.tokenizer().encode(" no"),
    ];
    let mut prompt = support.clone();
    prompt.extend(&query);
    let reusing = load(which, true);
    for (label, m) in [("fresh", &model), ("reused-prefix", &reusing)] {
        group.bench_function(label, |b| {
            b.iter(|| m.score_tokens(&prompt, &answers).expect("score"))
        });
    }
    group.finish();

    // Scoring five multi-token class names after a cached prompt (a 5-way episode): all five
    // as branches of one call, against the baseline of one call per name (what `score` did
    // before branches: the prompt's last position and one name per pass over the weights).
    let mut group = c.benchmark_group(format!("{name}/score-5-candidates"));
    group.sample_size(10).warm_up_time(Duration::from_secs(1));
    let names: Vec<Vec<u32>> = [
        " T-shirt",
        " Trouser",
        " Pullover",
        " Sneaker",
        " Ankle boot",
    ]
    .iter()
    .map(|n| model.tokenizer().encode(n))
    .collect();
    reusing.logits(&prompt, prompt.len() - 1).expect("prefill");
    group.bench_function("branches", |b| {
        b.iter(|| reusing.score_tokens(&prompt, &names).expect("score"))
    });
    group.bench_function("one-call-per-candidate", |b| {
        b.iter(|| {
            for n in &names {
                reusing
                    .score_tokens(&prompt, std::slice::from_ref(n))
                    .expect("score");
            }
        })
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    bench_model(c, KnownModel::Gemma3_270m);
    bench_model(c, KnownModel::SmolLm2_135m);
}

criterion_group!(local, benches);
criterion_main!(local);
