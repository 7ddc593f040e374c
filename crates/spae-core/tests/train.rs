//! Training reduces the reconstruction loss on simple synthetic images, and moves the encoder
//! (the straight-through estimator carries its gradient past the argmin).

use candle_core::{Device, Tensor};
use rand::{rngs::StdRng, Rng, SeedableRng};
use spae_core::{
    usage_loss, Codebook, CodebookInfo, DecoderInput, ModelConfig, SpaeModel, TrainConfig, Trainer,
    UsageConfig, VocabFilter, WordMarker,
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
    // The first and last 15 steps' mean loss, 4 standard errors apart (each step draws its
    // own depth and batch, so step losses scatter; the seeds fix which on every machine).
    // Measured: 0.098 -> 0.053, 5.7 standard errors. No learning would be ~0.
    assert_loss_falls(&losses[..15], &losses[65..], 4.0);
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
    let diff = max_abs(enc.as_tensor(), enc0.as_tensor());
    // Without a gradient through the quantizer only AdamW's decay would move these weights,
    // by at most steps * lr * weight_decay * max|w| (2.4e-5 here); a gradient moves a weight
    // by up to lr a step (measured: 0.08). 10x the decay-only drift tells them apart.
    let w0: f32 = enc0
        .as_tensor()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    let decay_only = 80.0 * 3e-3 * TrainConfig::default().weight_decay as f32 * w0;
    assert!(
        diff > 10.0 * decay_only,
        "encoder did not train: moved {diff}, decay alone {decay_only}"
    );
}

/// The mean loss of the steps in `after` is `sigmas` standard errors below that of `before`:
/// a fall that the scatter of single steps' losses cannot explain.
fn assert_loss_falls(before: &[f32], after: &[f32], sigmas: f32) {
    let mean = |x: &[f32]| x.iter().sum::<f32>() / x.len() as f32;
    // Squared standard error of a window's mean: sample variance / n.
    let se2 = |x: &[f32]| {
        let m = mean(x);
        x.iter().map(|v| (v - m) * (v - m)).sum::<f32>() / (x.len() - 1) as f32 / x.len() as f32
    };
    let (first, last) = (mean(before), mean(after));
    let se = (se2(before) + se2(after)).sqrt();
    assert!(
        first - last > sigmas * se,
        "recon loss {first} -> {last}: a fall of {} standard errors (se {se}), wanted {sigmas}",
        (first - last) / se
    );
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
    train_frozen(&model, &mut rng, 1.0);
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
}

/// 60 steps of decoder-only training with `full_depth_share`: only reconstruction counts,
/// and it falls.
fn train_frozen(model: &SpaeModel, rng: &mut StdRng, full_depth_share: f64) {
    let tcfg = TrainConfig {
        steps: 60,
        batch_size: 8,
        lr: 3e-3,
        warmup: 10,
        full_depth_share,
        freeze_encoder: true,
        ..Default::default()
    };
    let mut trainer = Trainer::new(model, tcfg).unwrap();
    let mut losses = Vec::new();
    for _ in 0..60 {
        let l = trainer.step(model, &batch(rng, 8)).unwrap();
        assert!(l.total == l.recon, "only reconstruction counts: {l:?}");
        losses.push(l.recon);
    }
    // It falls: the last 10 steps' mean 2 standard errors below the first 10's (measured:
    // 12.5 standard errors for the plain decoder, 3.0 for the widened one at share 0.5).
    assert_loss_falls(&losses[..10], &losses[50..], 2.0);
}

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap()
}

/// `a` and `b` reconstruct `probe` to the same bits at depths 1..=`depth`: a grown decoder's
/// new residual blocks start with conv2 at zero, so they add exactly 0 (x + 0 = x), and all
/// else is the same arithmetic on the same values.
fn assert_decode_alike(a: &SpaeModel, b: &SpaeModel, probe: &Tensor, depth: usize) {
    for d in 1..=depth {
        let (x, y) = (
            a.reconstruct(probe, d).unwrap(),
            b.reconstruct(probe, d).unwrap(),
        );
        assert_eq!(max_abs(&x, &y), 0.0, "depth {d}");
    }
}

/// How far a widened (layers) decoder's images may be from the mean decoder's. It computes
/// W (E_1 + ... + E_l) / l as one sum of up to l d + 1 = 81 products (slots E_i / l, bias)
/// where the mean decoder adds the layers first and then sums d + 1 = 17: the same as the
/// mean decoder fed zhat off by at most ~81 roundings, 81 * 2^-24 * max|zhat| (1.5e-6 here,
/// max|zhat| 0.31). The decoder's gain from zhat to the image is ~2.3 (measured: random
/// input perturbations of 3e-6 and 3e-7 move the image by 7e-6 and 7e-7), so images differ
/// by at most ~3.5e-6; 1e-5 allows 3x that. Measured: 2.4e-7. A wrong widening (slots not
/// divided by l, W not tiled) moves pixels by tenths.
const WIDENED_TOL: f32 = 1e-5;

/// Widening a mean decoder to one that reads the layers apart changes nothing it decodes, at
/// any depth and from words, and survives a checkpoint; then training the widened decoder
/// on the frozen words lowers the loss.
#[test]
fn a_widened_layers_decoder_starts_where_the_mean_decoder_was_and_trains() {
    let mean = SpaeModel::new_seeded(small_cfg(), codebook(256, 16), &Device::Cpu, 0).unwrap();
    let wide = mean.with_decoder_input(DecoderInput::Layers).unwrap();
    assert_eq!(wide.config().decoder_input, DecoderInput::Layers);
    let mut rng = StdRng::seed_from_u64(8);
    let probe = batch(&mut rng, 4);
    for depth in 1..=5 {
        let (a, b) = (
            mean.reconstruct(&probe, depth).unwrap(),
            wide.reconstruct(&probe, depth).unwrap(),
        );
        let d = max_abs(&a, &b);
        assert!(d < WIDENED_TOL, "depth {depth}: {d}");
        // Not vacuous: the image depends on the depth, by far more than the tolerance
        // (measured: >= 0.19).
        if depth > 1 {
            let prev = wide.reconstruct(&probe, depth - 1).unwrap();
            assert!(
                max_abs(&b, &prev) > 100.0 * WIDENED_TOL,
                "depth {depth} decodes like {}",
                depth - 1
            );
        }
    }
    let words = wide.tokenize(&probe, 3).unwrap();
    assert_eq!(words, mean.tokenize(&probe, 3).unwrap());
    let (a, b) = (
        mean.detokenize(&words).unwrap(),
        wide.detokenize(&words).unwrap(),
    );
    assert!(max_abs(&a, &b) < WIDENED_TOL);
    assert!(wide.with_decoder_input(DecoderInput::Layers).is_err());
    assert!(wide.with_decoder_input(DecoderInput::Mean).is_err());

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wide.safetensors");
    wide.save(&path).unwrap();
    let loaded = SpaeModel::load(&path, &Device::Cpu).unwrap();
    assert_eq!(loaded.config().decoder_input, DecoderInput::Layers);
    assert_eq!(
        max_abs(
            &loaded.reconstruct(&probe, 5).unwrap(),
            &wide.reconstruct(&probe, 5).unwrap()
        ),
        0.0
    );

    train_frozen(&wide, &mut rng, 0.5);
    assert_eq!(wide.tokenize(&probe, 3).unwrap(), words);
    // The slots of layers 2..5 now carry weights of their own.
    let w = wide
        .named_vars()
        .into_iter()
        .find(|(n, _)| n == "decoder.lin_in.weight")
        .unwrap()
        .1;
    let w = w.as_tensor();
    assert_eq!(w.dims()[1], 5 * 16);
    // The slots start as identical copies and weight decay scales them alike, so without
    // gradients of their own they stay bit-equal; Adam moves a weight with a gradient by ~lr
    // (3e-3, lr / 10 in the first warm-up step) a step. Measured: 0.10 apart.
    assert!(max_abs(&w.narrow(1, 0, 16).unwrap(), &w.narrow(1, 64, 16).unwrap()) > 1e-4);
}

/// More decoder blocks and one more full-resolution layer: depths 1..5 decode as before, the
/// first five layers keep their words, and depth 6 refines what depth 5 had.
#[test]
fn growing_the_decoder_and_the_pyramid_keeps_every_image_and_word() {
    let small = SpaeModel::new_seeded(small_cfg(), codebook(256, 16), &Device::Cpu, 0).unwrap();
    let mut to = small.config().clone();
    to.pyramid.layers.push(8);
    let p = to.patch.as_mut().unwrap();
    p.dec_blocks += 1;
    p.fine_blocks += 1;
    let grown = small.grow_decoder(&to).unwrap();
    assert!(grown.num_parameters() > small.num_parameters());
    let mut rng = StdRng::seed_from_u64(9);
    let probe = batch(&mut rng, 4);
    assert_decode_alike(&small, &grown, &probe, 5);
    let five = small.tokenize(&probe, 5).unwrap();
    let six = grown.tokenize(&probe, 6).unwrap();
    for (a, b) in five.iter().zip(&six) {
        assert_eq!(a.layers[..], b.layers[..5]);
        assert_eq!(b.layers[5].indices.len(), 64);
    }
    // SAQ's sixth layer brings zhat closer to z: the full-depth quantization error falls.
    let z = grown.encode(&probe).unwrap();
    let q = grown.quantize(&probe, 6).unwrap();
    let err = |l: usize| {
        (&q.recon[l] - &z)
            .unwrap()
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    // Measured 0.0065 vs 0.0075: a gap of 1e-3, 500 times the worst-case rounding of either
    // mean of 4 * 8 * 8 * 16 = 4096 f32 squares (4096 * 2^-24 * 0.0075 ~ 2e-6).
    assert!(err(5) < err(4), "{} vs {}", err(5), err(4));

    // What cannot grow says why.
    let mut shrink = small.config().clone();
    shrink.patch.as_mut().unwrap().dec_blocks = 0;
    let e = small.grow_decoder(&shrink).unwrap_err().to_string();
    assert!(e.contains("shrink"), "{e}");
    let mut other = small.config().clone();
    other.pyramid.layers = vec![1, 2, 4, 8];
    let e = small.grow_decoder(&other).unwrap_err().to_string();
    assert!(e.contains("does not extend"), "{e}");
    let mut enc = small.config().clone();
    enc.patch.as_mut().unwrap().enc_width += 1;
    let e = small.grow_decoder(&enc).unwrap_err().to_string();
    assert!(e.contains("keeps every setting"), "{e}");
}

/// The usage term is the mean per-position entropy of the soft assignments minus the entropy
/// of their mean: 0 when every position sits on one entry, -ln(B) when each of B images sits
/// on its own entry (each position sharp, the batch spread evenly over B entries).
#[test]
fn usage_term_is_zero_when_collapsed_and_minus_ln_b_when_spread() {
    let (v, d) = (256, 16);
    let cb = codebook(v, d);
    let model = SpaeModel::new_seeded(small_cfg(), cb.clone(), &Device::Cpu, 0).unwrap();
    let z0 = model
        .encode(&batch(&mut StdRng::seed_from_u64(1), 1))
        .unwrap();
    let (_, s, _, _) = z0.dims4().unwrap();
    let rows = cb.embeddings().to_vec2::<f32>().unwrap();
    let b = 4;
    // z of image j: entry entries[j] at every position.
    let z_of = |entries: &[usize]| -> Tensor {
        let mut data = Vec::new();
        for &e in entries {
            for _ in 0..s * s {
                data.extend_from_slice(&rows[e]);
            }
        }
        Tensor::from_vec(data, (entries.len(), s, s, d), &Device::Cpu).unwrap()
    };
    // Sharp assignments: tau 1/40 of the smallest squared distance from a chosen entry to any
    // other leaves the rest at most V e^-40 ~ 1e-15 of the mass.
    let chosen = [3, 50, 120, 200];
    let nearest = chosen
        .iter()
        .map(|&e| {
            (0..v)
                .filter(|&o| o != e)
                .map(|o| {
                    rows[e]
                        .iter()
                        .zip(&rows[o])
                        .map(|(a, c)| (a - c) * (a - c))
                        .sum::<f32>()
                })
                .fold(f32::INFINITY, f32::min)
        })
        .fold(f32::INFINITY, f32::min);
    let tau = nearest as f64 / 40.0;
    // f32 log-softmax and entropies over V entries: each sum of V terms rounds by at most
    // V ulps of its largest term (<= 1 here; ln B for the batch's).
    let tol = v as f32 * f32::EPSILON * (b as f32).ln().max(1.0);
    let collapsed: f32 = usage_loss(&model, &z_of(&[50; 4]), tau)
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!(
        collapsed.abs() <= tol,
        "collapsed: {collapsed} (tol {tol:.1e})"
    );
    let spread: f32 = usage_loss(&model, &z_of(&chosen), tau)
        .unwrap()
        .to_scalar()
        .unwrap();
    let want = -(b as f32).ln();
    assert!(
        (spread - want).abs() <= tol,
        "spread: {spread} vs {want} (tol {tol:.1e})"
    );
    // And a training step reports it, with the term on.
    let tcfg = TrainConfig {
        steps: 1,
        batch_size: 2,
        usage: Some(UsageConfig {
            weight: 0.1,
            tau: 0.1,
        }),
        ..Default::default()
    };
    let mut trainer = Trainer::new(&model, tcfg).unwrap();
    let l = trainer
        .step(&model, &batch(&mut StdRng::seed_from_u64(3), 2))
        .unwrap();
    assert!(l.usage.is_finite() && l.usage != 0.0, "{l:?}");
}
