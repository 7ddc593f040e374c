//! SpaeModel: shapes for gray 28x28 and RGB 128x128, token round trips, checkpoints.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use rand::{rngs::StdRng, Rng, SeedableRng};
use spae_core::{
    Codebook, CodebookInfo, FrozenInputs, ModelConfig, PyramidConfig, QuantizerKind, SpaeModel,
    TokenPyramid, VocabFilter, WordMarker,
};

fn codebook(v: usize, d: usize) -> Codebook {
    let mut rng = StdRng::seed_from_u64(3);
    let info = CodebookInfo {
        source: "random".into(),
        marker: WordMarker::SentencePiece,
        filter: VocabFilter::default(),
        vocab_size: v,
        projection: None,
    };
    let data: Vec<f32> = (0..v * d).map(|_| rng.gen_range(-0.3f32..0.3)).collect();
    let rows = Tensor::from_vec(data, (v, d), &Device::Cpu).unwrap();
    let pieces = (0..v).map(|i| format!("\u{2581}{}", word(i))).collect();
    Codebook::new(info, (100..100 + v as u32).collect(), pieces, rows).unwrap()
}

/// Distinct letter-only words: a, b, ..., z, ba, bb, ...
fn word(mut i: usize) -> String {
    let mut s = String::new();
    loop {
        s.insert(0, (b'a' + (i % 26) as u8) as char);
        i /= 26;
        if i == 0 {
            break;
        }
    }
    format!("w{s}")
}

fn gray_cfg() -> ModelConfig {
    ModelConfig {
        channels: vec![8, 16, 16],
        ..ModelConfig::mnist(16)
    }
}

fn images(b: usize, c: usize, s: usize) -> Tensor {
    let mut rng = StdRng::seed_from_u64(5);
    let data: Vec<f32> = (0..b * c * s * s)
        .map(|_| rng.gen_range(0f32..1.0))
        .collect();
    Tensor::from_vec(data, (b, c, s, s), &Device::Cpu).unwrap()
}

fn model() -> SpaeModel {
    SpaeModel::new_seeded(gray_cfg(), codebook(300, 16), &Device::Cpu, 0).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap()
}

#[test]
fn gray_28x28_shapes_and_token_counts() {
    let m = model();
    assert_eq!(m.config().grid(), 8);
    let x = images(2, 1, 28);
    assert_eq!(m.encode(&x).unwrap().dims(), &[2, 8, 8, 16]);
    let pyr = m.tokenize(&x, 5).unwrap();
    assert_eq!(pyr.len(), 2);
    let sizes: Vec<usize> = pyr[0].layers.iter().map(|l| l.words.len()).collect();
    assert_eq!(sizes, vec![1, 4, 16, 64, 64]);
    let l0 = &pyr[0].layers[0];
    assert_eq!(
        l0.token_ids[0],
        100 + l0.indices[0],
        "token ids come from the codebook"
    );
    assert_eq!(m.reconstruct(&x, 3).unwrap().dims(), &[2, 1, 28, 28]);
}

#[test]
fn rgb_128x128_works() {
    let cfg = ModelConfig {
        image_size: 128,
        in_channels: 3,
        channels: vec![4, 8, 8, 8],
        res_blocks: 1,
        embed_dim: 16,
        pyramid: PyramidConfig::new(16, vec![1, 2, 4, 8, 16]).unwrap(),
        quantizer: QuantizerKind::Saq,
        global_context: false,
        patch: None,
        decoder_input: Default::default(),
        backbone: None,
        prior: None,
    };
    let m = SpaeModel::new_seeded(cfg, codebook(64, 16), &Device::Cpu, 1).unwrap();
    let x = images(1, 3, 128);
    let pyr = m.tokenize(&x, 5).unwrap();
    assert_eq!(
        pyr[0].layers.iter().map(|l| l.words.len()).sum::<usize>(),
        1 + 4 + 16 + 64 + 256
    );
    assert_eq!(m.detokenize(&pyr).unwrap().dims(), &[1, 3, 128, 128]);
}

#[test]
fn detokenize_of_tokens_equals_reconstruct_and_words_round_trip() {
    let m = model();
    let x = images(3, 1, 28);
    for depth in 1..=5 {
        let pyr = m.tokenize(&x, depth).unwrap();
        let back = m.detokenize(&pyr).unwrap();
        // Exact: both decode the same sum of the same codebook rows, added in the same order
        // (0 + E_1 + ... in `quantize` is E_1 + ... bit for bit), through the same decoder on
        // a batch of the same shape, so the same arithmetic in the same order.
        assert_eq!(
            max_diff(&back, &m.reconstruct(&x, depth).unwrap()),
            0.0,
            "depth {depth}"
        );
        // Words -> tokens -> words is the identity, through text and JSON.
        let text = pyr[1].to_text();
        let words: Vec<&str> = text.split_whitespace().collect();
        let parsed =
            TokenPyramid::from_words(&words, m.codebook(), &m.config().pyramid.layers).unwrap();
        assert_eq!(parsed, pyr[1]);
        let json = serde_json::to_string(&pyr).unwrap();
        let again: Vec<TokenPyramid> = serde_json::from_str(&json).unwrap();
        assert_eq!(again, pyr);
        // Tokenizing the same images again gives the same tokens.
        assert_eq!(m.tokenize(&x, depth).unwrap(), pyr);
    }
}

#[test]
fn seeded_init_is_reproducible() {
    let a = model();
    let b = model();
    let x = images(1, 1, 28);
    assert_eq!(
        max_diff(
            &a.reconstruct(&x, 5).unwrap(),
            &b.reconstruct(&x, 5).unwrap()
        ),
        0.0
    );
}

#[test]
fn bad_inputs_are_errors() {
    let m = model();
    let err = m.tokenize(&images(1, 3, 28), 2).unwrap_err();
    assert!(err.to_string().contains("1x28x28"), "{err}");
    let err = m.tokenize(&images(1, 1, 28), 9).unwrap_err();
    assert!(err.to_string().contains("depth 9"), "{err}");
    let err = TokenPyramid::from_words(&["wa", "nope"], m.codebook(), &[1, 2]).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
    let err = TokenPyramid::from_words(&["wa", "wb"], m.codebook(), &[1, 2]).unwrap_err();
    assert!(err.to_string().contains("whole layers"), "{err}");
    let bad_cfg = ModelConfig {
        embed_dim: 32,
        ..gray_cfg()
    };
    assert!(SpaeModel::new(bad_cfg, codebook(10, 16), &Device::Cpu).is_err());
}

#[test]
fn checkpoint_save_load_gives_identical_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    let m = model();
    m.save(&path).unwrap();
    let l = SpaeModel::load(&path, &Device::Cpu).unwrap();
    assert_eq!(l.config(), m.config());
    assert_eq!(l.codebook().pieces(), m.codebook().pieces());
    assert_eq!(l.codebook().token_ids(), m.codebook().token_ids());
    let x = images(2, 1, 28);
    assert_eq!(l.tokenize(&x, 5).unwrap(), m.tokenize(&x, 5).unwrap());
    assert_eq!(
        max_diff(
            &l.reconstruct(&x, 5).unwrap(),
            &m.reconstruct(&x, 5).unwrap()
        ),
        0.0
    );
}

/// Rewrite a saved checkpoint with edited metadata and tensors.
fn rewrite(
    src: &Path,
    dst: &Path,
    edit: impl FnOnce(&mut HashMap<String, String>, &mut HashMap<String, Tensor>),
) {
    let bytes = std::fs::read(src).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut meta = header.metadata().clone().unwrap();
    let mut tensors = candle_core::safetensors::load(src, &Device::Cpu).unwrap();
    edit(&mut meta, &mut tensors);
    safetensors::serialize_to_file(&tensors, Some(meta), dst).unwrap();
}

fn load_err(path: &Path) -> String {
    SpaeModel::load(path, &Device::Cpu).unwrap_err().to_string()
}

#[test]
fn corrupt_checkpoints_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.safetensors");
    model().save(&good).unwrap();
    let bytes = std::fs::read(&good).unwrap();

    let p = dir.path().join("truncated.safetensors");
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(&p);
    assert!(
        e.contains("truncated.safetensors") && e.contains("truncated,"),
        "{e}"
    );

    std::fs::write(&p, &bytes[..5]).unwrap();
    assert!(load_err(&p).contains("not a safetensors file"));

    let p = dir.path().join("v2.safetensors");
    rewrite(&good, &p, |m, _| {
        m.insert("spae.format_version".into(), "2".into());
    });
    let e = load_err(&p);
    assert!(
        e.contains("version 2") && e.contains("reads version 1"),
        "{e}"
    );

    let p = dir.path().join("mismatch.safetensors");
    rewrite(&good, &p, |m, _| {
        let mut cfg: ModelConfig = serde_json::from_str(&m["spae.model"]).unwrap();
        match cfg.patch.as_mut() {
            Some(p) => p.enc_width += 8,
            None => cfg.channels = vec![8, 16, 32],
        }
        m.insert("spae.model".into(), serde_json::to_string(&cfg).unwrap());
    });
    let e = load_err(&p);
    assert!(e.contains("shape") && e.contains("config expects"), "{e}");

    let p = dir.path().join("extra.safetensors");
    rewrite(&good, &p, |_, t| {
        t.insert(
            "model.encoder.extra.weight".into(),
            Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
        );
    });
    assert!(load_err(&p).contains("model.encoder.extra.weight"));

    let p = dir.path().join("nocodebook.safetensors");
    rewrite(&good, &p, |_, t| {
        t.remove("codebook.pieces");
    });
    assert!(load_err(&p).contains("missing tensor codebook.pieces"));

    let p = dir.path().join("other.safetensors");
    candle_core::safetensors::save(
        &HashMap::from([(
            "x".to_string(),
            Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap(),
        )]),
        &p,
    )
    .unwrap();
    assert!(load_err(&p).contains("not a spae-icl checkpoint"));
}

/// An encoder that reads a frozen ImageNet network's features (`ModelConfig::backbone`): it
/// refuses to encode until the network is attached, refuses a network that gives other
/// features, computes from the features it is given, and saves and loads without the network.
#[test]
fn an_encoder_reads_the_attached_backbone_features() {
    use spae_core::model::BackboneConfig;
    use spae_core::scorer::devise::backbone;
    let weights = spae_assets::AssetCache::from_env()
        .fetch_named("mobilenet-v2-imagenet")
        .unwrap();
    let cfg = ModelConfig {
        image_size: 32,
        in_channels: 3,
        backbone: Some(BackboneConfig {
            input_size: 64,
            feature_dim: 1280,
            weights_sha256: "the test's".into(),
        }),
        ..ModelConfig::mnist(16)
    };
    let mut m = SpaeModel::new_seeded(cfg.clone(), codebook(300, 16), &Device::Cpu, 0).unwrap();
    let x = images(2, 3, 32);
    let err = m.encode(&x).unwrap_err().to_string();
    assert!(err.contains("no backbone is attached"), "{err}");
    let wrong = backbone(&weights, 96, &Device::Cpu).unwrap();
    let err = m.attach_backbone(wrong.into()).unwrap_err().to_string();
    assert!(err.contains("64x64") && err.contains("96x96"), "{err}");
    let net = std::sync::Arc::new(backbone(&weights, 64, &Device::Cpu).unwrap());
    m.attach_backbone(net.clone()).unwrap();

    let z = m.encode(&x).unwrap();
    let features = m.backbone_features(&x).unwrap().unwrap();
    assert_eq!(features.dims(), [2, 1280]);
    // The same arithmetic on the same inputs: bit for bit.
    assert_eq!(
        max_diff(&m.encode_with(&x, &reading(&features)).unwrap(), &z),
        0.0
    );
    // Other features give another grid: the features are read.
    let other = m
        .encode_with(&x, &reading(&features.zeros_like().unwrap()))
        .unwrap();
    let rms = z
        .sqr()
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
        .sqrt();
    assert!(
        max_diff(&other, &z) > 0.01 * rms,
        "features do not change z"
    );
    assert!(m.encode_with(&x, &FrozenInputs::default()).is_err());

    let mut l = reloaded(&m, &x);
    l.attach_backbone(net.clone()).unwrap();
    assert_eq!(l.tokenize(&x, 5).unwrap(), m.tokenize(&x, 5).unwrap());

    // A model without a backbone takes none.
    let mut plain = SpaeModel::new_seeded(
        ModelConfig {
            backbone: None,
            ..cfg
        },
        codebook(300, 16),
        &Device::Cpu,
        0,
    )
    .unwrap();
    assert!(plain.encode_with(&x, &reading(&features)).is_err());
    assert!(plain.attach_backbone(net).is_err());
}

/// `m` saved and loaded again: the same config, and it refuses to tokenize `x` until its
/// frozen networks are attached (they are not in the checkpoint).
fn reloaded(m: &SpaeModel, x: &Tensor) -> SpaeModel {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("frozen.safetensors");
    m.save(&path).unwrap();
    let l = SpaeModel::load(&path, &Device::Cpu).unwrap();
    assert_eq!(l.config(), m.config());
    assert!(l.tokenize(x, 2).is_err());
    l
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs().unwrap().max_all().unwrap().to_scalar().unwrap()
}

fn reading(features: &Tensor) -> FrozenInputs {
    FrozenInputs {
        features: Some(features.clone()),
        prior: None,
    }
}

/// A teacher that finds entry `k` of `v` relevant to every image and no other.
struct OneWordTeacher {
    v: usize,
    k: usize,
}

impl spae_core::SemanticScorer for OneWordTeacher {
    fn relevance(&self, images: &Tensor) -> spae_core::Result<Tensor> {
        let b = images.dims()[0];
        let row: Vec<f32> = (0..self.v).map(|i| f32::from(i == self.k)).collect();
        Ok(Tensor::from_vec(row, (1, self.v), &Device::Cpu)?.repeat((b, 1))?)
    }
    fn entries(&self) -> usize {
        self.v
    }
}

/// An encoder with a teacher prior (`ModelConfig::prior`): it refuses to encode until the
/// teacher is attached, refuses a teacher of another codebook, adds the relevance-weighted
/// codebook rows to its output, and saves and loads without the teacher.
#[test]
fn an_encoder_starts_from_the_attached_teachers_prior() {
    use spae_core::model::PriorConfig;
    let cfg = ModelConfig {
        prior: Some(PriorConfig {
            scorer: "a test teacher".into(),
            scorer_sha256: "the test's".into(),
            data: "none".into(),
            temperature: 0.01,
        }),
        ..ModelConfig::mnist(16)
    };
    let mut m = SpaeModel::new_seeded(cfg.clone(), codebook(300, 16), &Device::Cpu, 0).unwrap();
    let x = images(2, 1, 28);
    let err = m.encode(&x).unwrap_err().to_string();
    assert!(err.contains("none is attached"), "{err}");
    let err = m
        .attach_prior(std::sync::Arc::new(OneWordTeacher { v: 299, k: 7 }))
        .unwrap_err()
        .to_string();
    assert!(err.contains("299") && err.contains("300"), "{err}");
    m.attach_prior(std::sync::Arc::new(OneWordTeacher { v: 300, k: 7 }))
        .unwrap();

    // One entry relevant at cosine 1, the others at 0, temperature 0.01. Entry 7 weighs
    // 1 / (1 + 299 e^-100), which rounds to 1 in f32 (299 e^-100 ~ 1e-41 is far below eps/2);
    // the others weigh e^-100 ~ 4e-44 each (or 0 where exp flushes denormals), so together
    // they add at most 299 * 4e-44 * 0.3 ~ 4e-42 to an element of the prior, whatever the
    // order of the sum and with or without FMA. Each element is then row 7's element up to
    // that and one rounding of the sum (eps/2 of the element): within 2 eps of the row's
    // largest element, which is 0.3 at most, so 4e-42 is nowhere near it.
    let prior = m.prior_embeddings(&x).unwrap().unwrap();
    assert_eq!(prior.dims(), [2, 16]);
    let row7 = m.codebook().embeddings().narrow(0, 7, 1).unwrap();
    let want = row7.repeat((2, 1)).unwrap();
    assert!(max_diff(&prior, &want) <= 2.0 * f32::EPSILON * max_abs(&want));

    // The prior is added to every grid position of the encoder's output: with it and with a
    // zero prior, the grids differ by it. The encoder computes the same z both times, z + 0 is
    // z exactly, and with = fl(z + p) is within eps/2 |with| of z + p; the subtraction
    // with - z rounds once more, within eps/2 |with - z| <= eps/2 (|with| + |without|). So
    // each element differs from p by at most eps (|with| + |without|); the bound takes 2 eps
    // of the grids' largest elements.
    let with = m.encode(&x).unwrap();
    let zero = FrozenInputs {
        features: None,
        prior: Some(prior.zeros_like().unwrap()),
    };
    let without = m.encode_with(&x, &zero).unwrap();
    let (b, g, d) = (2, 8, 16);
    let added = (&with - &without).unwrap();
    let expect = prior
        .reshape((b, 1, 1, d))
        .unwrap()
        .broadcast_as((b, g, g, d))
        .unwrap();
    let span = max_abs(&with) + max_abs(&without);
    assert!(max_diff(&added, &expect) <= 2.0 * f32::EPSILON * span);
    assert!(m.encode_with(&x, &FrozenInputs::default()).is_err());

    let mut l = reloaded(&m, &x);
    l.attach_prior(std::sync::Arc::new(OneWordTeacher { v: 300, k: 7 }))
        .unwrap();
    assert_eq!(l.tokenize(&x, 5).unwrap(), m.tokenize(&x, 5).unwrap());

    // A model without a prior takes none.
    let mut plain =
        SpaeModel::new_seeded(ModelConfig::mnist(16), codebook(300, 16), &Device::Cpu, 0).unwrap();
    assert!(plain.encode_with(&x, &zero).is_err());
    assert!(plain
        .attach_prior(std::sync::Arc::new(OneWordTeacher { v: 300, k: 7 }))
        .is_err());
}
