//! Training reduces the reconstruction loss on simple synthetic images, and moves the encoder
//! (the straight-through estimator carries its gradient past the argmin).

use candle_core::{Device, Tensor};
use rand::{rngs::StdRng, Rng, SeedableRng};
use spae_core::{
    Codebook, CodebookInfo, ModelConfig, SpaeModel, TrainConfig, Trainer, VocabFilter, WordMarker,
};

fn codebook(v: usize, d: usize) -> Codebook {
    let mut rng = StdRng::seed_from_u64(11);
    let info = CodebookInfo {
        source: "random".into(),
        marker: WordMarker::SentencePiece,
        filter: VocabFilter::default(),
        vocab_size: v,
        projection: None,
    };
    // Unit-norm rows, like an LLM's embedding table.
    let mut data: Vec<f32> = (0..v * d).map(|_| rng.gen_range(-1f32..1.0)).collect();
    for row in data.chunks_mut(d) {
        let n = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        row.iter_mut().for_each(|x| *x /= n);
    }
    let rows = Tensor::from_vec(data, (v, d), &Device::Cpu).unwrap();
    Codebook::new(
        info,
        (0..v as u32).collect(),
        (0..v).map(|i| format!("\u{2581}w{i}")).collect(),
        rows,
    )
    .unwrap()
}

/// Bright rectangles on black, 28x28.
fn batch(rng: &mut StdRng, b: usize) -> Tensor {
    let mut data = vec![0f32; b * 28 * 28];
    for img in data.chunks_mut(28 * 28) {
        let (x0, y0) = (rng.gen_range(2..14), rng.gen_range(2..14));
        let (w, h) = (rng.gen_range(6..12), rng.gen_range(6..12));
        for y in y0..y0 + h {
            for x in x0..x0 + w {
                img[y * 28 + x] = 1.0;
            }
        }
    }
    Tensor::from_vec(data, (b, 1, 28, 28), &Device::Cpu).unwrap()
}

/// The default (patch) model, narrowed so the test takes seconds.
fn small_cfg() -> ModelConfig {
    let mut cfg = ModelConfig::mnist(16);
    cfg.patch = Some(spae_core::patch::PatchConfig {
        patch: 4,
        enc_width: 16,
        enc_blocks: 1,
        dec_width: 32,
        dec_blocks: 1,
        fine_width: 8,
        fine_blocks: 1,
    });
    cfg
}

#[test]
fn training_reduces_reconstruction_loss() {
    let cfg = small_cfg();
    let model = SpaeModel::new_seeded(cfg, codebook(256, 16), &Device::Cpu, 0).unwrap();
    let tcfg = TrainConfig {
        steps: 80,
        batch_size: 8,
        lr: 3e-3,
        warmup: 10,
        ..Default::default()
    };
    let mut trainer = Trainer::new(&model, tcfg).unwrap();
    let mut rng = StdRng::seed_from_u64(2);
    let mut losses = Vec::new();
    for _ in 0..80 {
        let x = batch(&mut rng, 8);
        let l = trainer.step(&model, &x).unwrap();
        assert!(l.total.is_finite());
        assert!((1..=5).contains(&l.depth));
        losses.push(l.recon);
    }
    let first: f32 = losses[..15].iter().sum::<f32>() / 15.0;
    let last: f32 = losses[65..].iter().sum::<f32>() / 15.0;
    assert!(last < first * 0.6, "recon loss {first} -> {last}");
    // The encoder's first layer also moves: gradient passes the quantizer.
    let enc = model
        .named_vars()
        .into_iter()
        .find(|(n, _)| n == "encoder.lin_in.weight")
        .unwrap()
        .1;
    let fresh = SpaeModel::new_seeded(small_cfg(), codebook(256, 16), &Device::Cpu, 0).unwrap();
    let enc0 = fresh
        .named_vars()
        .into_iter()
        .find(|(n, _)| n == "encoder.lin_in.weight")
        .unwrap()
        .1;
    let diff: f32 = (enc.as_tensor() - enc0.as_tensor())
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!(diff > 1e-4, "encoder did not train");
}

/// Every variable's values, by name.
fn snapshot(model: &SpaeModel) -> Vec<(String, Vec<f32>)> {
    model
        .named_vars()
        .into_iter()
        .map(|(n, v)| (n, v.as_tensor().flatten_all().unwrap().to_vec1().unwrap()))
        .collect()
}

#[test]
fn a_frozen_encoder_keeps_every_word_and_trains_the_decoder() {
    let model = SpaeModel::new_seeded(small_cfg(), codebook(256, 16), &Device::Cpu, 0).unwrap();
    let mut rng = StdRng::seed_from_u64(5);
    let probe = batch(&mut rng, 4);
    let words = |m: &SpaeModel| -> Vec<String> {
        m.tokenize(&probe, 5)
            .unwrap()
            .iter()
            .map(|p| p.to_text())
            .collect()
    };
    let before_words = words(&model);
    let before = snapshot(&model);
    let tcfg = TrainConfig {
        steps: 60,
        batch_size: 8,
        lr: 3e-3,
        warmup: 10,
        full_depth_share: 1.0,
        freeze_encoder: true,
        ..Default::default()
    };
    let mut trainer = Trainer::new(&model, tcfg).unwrap();
    let mut losses = Vec::new();
    for _ in 0..60 {
        let l = trainer.step(&model, &batch(&mut rng, 8)).unwrap();
        assert!(l.total == l.recon, "only reconstruction counts: {l:?}");
        losses.push(l.recon);
    }
    let after = snapshot(&model);
    for ((name, a), (_, b)) in before.iter().zip(&after) {
        if name.starts_with("encoder.") {
            assert_eq!(a, b, "{name} moved with the encoder frozen");
        }
    }
    assert!(
        before
            .iter()
            .zip(&after)
            .any(|((n, a), (_, b))| n.starts_with("decoder.") && a != b),
        "the decoder did not train"
    );
    assert_eq!(words(&model), before_words);
    let first: f32 = losses[..10].iter().sum::<f32>() / 10.0;
    let last: f32 = losses[50..].iter().sum::<f32>() / 10.0;
    assert!(last < first, "recon loss {first} -> {last}");
}
