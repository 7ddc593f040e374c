//! The int8 kernels beside candle's f32 matmul (the baseline: what the local models ran before)
//! on Gemma 3 270M's shapes: prefill (512 tokens) and decode (1 token) through an FFN up
//! projection (2048 x 640) and the tied output head (262,144 x 640, decode only).
//! `cargo bench -p llm-client --bench kernels`; reads in multiply-adds per second.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use llm_client::local::kernels::{Isa, QuantMatrix};

fn data(n: usize, seed: u32) -> Vec<f32> {
    // A cheap deterministic spread of values in [-1, 1).
    (0..n as u32)
        .map(|i| ((i.wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / 8388608.0) - 1.0)
        .collect()
}

fn bench(c: &mut Criterion) {
    let shapes = [
        ("ffn-up", 2048usize, 640usize, 512usize),
        ("ffn-up", 2048, 640, 1),
        ("head", 262_144, 640, 1),
    ];
    for (name, rows, cols, t) in shapes {
        let mut group = c.benchmark_group(format!("{name}-{rows}x{cols}"));
        group.sample_size(10);
        group.throughput(Throughput::Elements((rows * cols * t) as u64));
        let w = data(rows * cols, 1);
        let x = data(t * cols, 2);
        let q = QuantMatrix::from_f32(&w, rows, cols).expect("quantize");
        for isa in Isa::available() {
            group.bench_with_input(BenchmarkId::new(format!("int8-{isa:?}"), t), &x, |b, x| {
                b.iter(|| q.matmul_with(x, t, isa).expect("matmul"))
            });
        }
        if rows * cols <= 1 << 22 {
            let wt =
                candle_core::Tensor::from_vec(w.clone(), (rows, cols), &candle_core::Device::Cpu)
                    .expect("tensor")
                    .t()
                    .expect("t");
            let xt = candle_core::Tensor::from_vec(x.clone(), (t, cols), &candle_core::Device::Cpu)
                .expect("tensor");
            group.bench_with_input(BenchmarkId::new("candle-f32", t), &xt, |b, xt| {
                b.iter(|| xt.matmul(&wt).expect("matmul"))
            });
        }
        group.finish();
    }
}

criterion_group!(kernels, bench);
criterion_main!(kernels);
