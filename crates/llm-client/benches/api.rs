//! API client throughput: a loopback server that answers after 200 ms, 1,000 requests at
//! concurrency 64. Ideal: 1000 x 0.2 / 64 = 3.125 s; printed beside the measured time.

#[path = "../tests/support/http.rs"]
mod http;

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use http::{completion_body, Reply, ScriptServer};
use llm_client::api::OpenAiModel;
use llm_client::{ApiOptions, GenerateParams, LanguageModel, ModelSpec, Prompt};

const REQUESTS: usize = 1000;
const CONCURRENCY: usize = 64;
const LATENCY: Duration = Duration::from_millis(200);

async fn run(model: &OpenAiModel) -> Duration {
    let params = GenerateParams::greedy(4);
    let start = Instant::now();
    let calls = (0..REQUESTS).map(|i| {
        let params = &params;
        async move {
            model
                .generate(&Prompt::Text(format!("request {i}")), params)
                .await
                .expect("request")
        }
    });
    futures_util::future::join_all(calls).await;
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let server = rt.block_on(ScriptServer::start(|_, _| {
        Reply::After(LATENCY, Box::new(Reply::ok(completion_body("ok"))))
    }));
    let spec =
        ModelSpec::parse(&format!("openai-compatible:{}#m", server.base_url())).expect("name");
    let options = ApiOptions {
        max_in_flight: CONCURRENCY,
        ..ApiOptions::default()
    };
    let model = OpenAiModel::new(&spec, None, &options).expect("model");
    let ideal = LATENCY.as_secs_f64() * REQUESTS as f64 / CONCURRENCY as f64;
    let took = rt.block_on(run(&model)).as_secs_f64();
    println!(
        "api: {REQUESTS} requests at concurrency {CONCURRENCY}, {} ms each: {took:.3} s \
         (ideal {ideal:.3} s, ratio {:.3})",
        LATENCY.as_millis(),
        took / ideal
    );
    let mut group = c.benchmark_group("api");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(1));
    group.measurement_time(Duration::from_secs(30));
    group.bench_function("1000_requests_concurrency_64_latency_200ms", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| rt.block_on(run(&model))).sum())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
