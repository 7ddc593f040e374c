//! Encoding throughput: 28x28 images -> full token pyramid, with the default MNIST-size model
//! (patch encoder, 4,096 entries projected to 16 dims, and to 64 as before).
//!
//! Baselines beside it: the encoder's forward pass alone (no quantization), so the cost of
//! SAQ's nearest-neighbour search shows; the first release's model (convolutional encoder,
//! 640-dim rows), the "before" of issue 5; and the same model in PyTorch on the same cores,
//! which `eval/bench-encode.sh` runs beside this bench (`eval/bench_encode_torch.py`).
//! Target (issue 5): at least 1,000 images/s for `tokenize`.

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use spae_core::{Codebook, CodebookInfo, ModelConfig, SpaeModel, VocabFilter, WordMarker};

fn codebook(v: usize, d: usize) -> Codebook {
    let info = CodebookInfo {
        source: "random".into(),
        marker: WordMarker::SentencePiece,
        filter: VocabFilter::default(),
        vocab_size: v,
        projection: None,
    };
    // Deterministic pseudo-random rows of norm ~1, like Gemma 3's embedding table.
    let data: Vec<f32> = (0..v * d)
        .map(|i| {
            (((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as f32 / (1u64 << 24) as f32
                - 0.5)
                * 0.137
        })
        .collect();
    let rows = Tensor::from_vec(data, (v, d), &Device::Cpu).expect("rows");
    let pieces = (0..v).map(|i| format!("\u{2581}w{i}")).collect();
    Codebook::new(info, (0..v as u32).collect(), pieces, rows).expect("codebook")
}

fn bench(c: &mut Criterion) {
    const BATCH: usize = 256;
    let images = Tensor::rand(0f32, 1f32, (BATCH, 1, 28, 28), &Device::Cpu).expect("images");
    let mut group = c.benchmark_group("encode_28x28");
    group.sample_size(10);
    group.throughput(Throughput::Elements(BATCH as u64));
    // d = 16: the shipped default since session 5; d = 64: the checkpoints before it.
    for d in [16, 64] {
        let model =
            SpaeModel::new_seeded(ModelConfig::mnist(d), codebook(4096, d), &Device::Cpu, 0)
                .expect("model");
        group.bench_function(
            format!("baseline: encoder forward only (patch, d={d})"),
            |b| b.iter(|| model.encode(&images).expect("encode")),
        );
        group.bench_function(format!("tokenize 5 layers (149 words), 4096 x {d}"), |b| {
            b.iter(|| model.tokenize(&images, 5).expect("tokenize"))
        });
        group.bench_function(format!("tokenize 2 layers (5 words), 4096 x {d}"), |b| {
            b.iter(|| model.tokenize(&images, 2).expect("tokenize"))
        });
    }
    let before = SpaeModel::new_seeded(
        ModelConfig::mnist_conv(640),
        codebook(4096, 640),
        &Device::Cpu,
        0,
    )
    .expect("model");
    group.bench_function("before: conv encoder, tokenize 5 layers, 4096 x 640", |b| {
        b.iter(|| before.tokenize(&images, 5).expect("tokenize"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
