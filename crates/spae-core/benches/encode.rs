//! Encoding throughput: 28x28 images -> full token pyramid, with the default MNIST-size model
//! (patch encoder, 4,096 entries projected to 16 dims, and to 64 as before).
//!
//! Baselines beside it: the encoder's forward pass alone (no quantization), so the cost of
//! SAQ's nearest-neighbour search shows; the first release's model (convolutional encoder,
//! 640-dim rows), the "before" of the throughput target below; and the same model in PyTorch
//! on the same cores, which `eval/bench-encode.sh` runs beside this bench
//! (`eval/bench_encode_torch.py`).
//! Target: at least 1,000 images/s for `tokenize`.
//!
//! `train_step`: one optimisation step of the default model at the shipped recipe's batch of
//! 32, and the 3x3 convolution's im2col forward + backward at the decoder's largest shape,
//! the custom op (`spae_core::patch::im2col3`) against the candle-op path it replaced
//! (`im2col3_views`, the baseline).

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use spae_core::patch::{im2col3, im2col3_views};
use spae_core::{
    Codebook, CodebookInfo, ModelConfig, SpaeModel, TrainConfig, Trainer, VocabFilter, WordMarker,
};

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
    // d = 16: the shipped default since checkpoint 414ea9e04a1f; d = 64: the checkpoints before
    // it (1bc5b08fed7b, now `checkpoints/spae-gemma3-mnist-fashion-d64.safetensors`).
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

fn bench_train_step(c: &mut Criterion) {
    const BATCH: usize = 32;
    let mut group = c.benchmark_group("train_step");
    group.sample_size(10);
    group.throughput(Throughput::Elements(BATCH as u64));
    // The decoder's 8x8 grid at width 128: gradients flow back through im2col.
    let x = candle_core::Var::randn(0f32, 1.0, (BATCH, 8, 8, 128), &Device::Cpu).expect("grid");
    let r = Tensor::randn(0f32, 1.0, (BATCH * 64, 9 * 128), &Device::Cpu).expect("weights");
    type Im2col = fn(&Tensor) -> candle_core::Result<Tensor>;
    let paths: [(&str, Im2col); 2] = [
        ("im2col 3x3 fwd+bwd, custom op (32x8x8x128)", im2col3),
        (
            "baseline: im2col 3x3 fwd+bwd, candle views (32x8x8x128)",
            im2col3_views,
        ),
    ];
    for (name, f) in paths {
        group.bench_function(name, |b| {
            b.iter(|| {
                let cols = f(x.as_tensor()).expect("im2col");
                (cols * &r)
                    .and_then(|y| y.sum_all()?.backward())
                    .expect("backward")
            })
        });
    }
    let model = SpaeModel::new_seeded(ModelConfig::mnist(16), codebook(4096, 16), &Device::Cpu, 0)
        .expect("model");
    let images = Tensor::rand(0f32, 1f32, (BATCH, 1, 28, 28), &Device::Cpu).expect("images");
    let mut trainer = Trainer::new(
        &model,
        TrainConfig {
            batch_size: BATCH,
            full_depth_share: 1.0,
            ..Default::default()
        },
    )
    .expect("trainer");
    group.bench_function("train step at full depth, patch model d=16", |b| {
        b.iter(|| trainer.step(&model, &images).expect("step"))
    });
    group.finish();
}

criterion_group!(benches, bench, bench_train_step);
criterion_main!(benches);
