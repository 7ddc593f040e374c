//! The real-CLIP scorer on small random weights written here in the HF layout.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use candle_transformers::models::clip::text_model::{Activation, ClipTextConfig};
use candle_transformers::models::clip::vision_model::ClipVisionConfig;
use candle_transformers::models::clip::{ClipConfig, ClipModel};
use spae_core::scorer::clip::ClipScorer;
use spae_core::{
    Codebook, CodebookInfo, CodebookScorer, ImageTextModel, SemanticScorer, VocabFilter, WordMarker,
};

const WORDS: [&str; 6] = ["a", "photo", "of", "cat", "dog", "shoe"];

fn write_tiny_clip(dir: &std::path::Path) {
    let cfg = ClipConfig {
        text_config: ClipTextConfig {
            vocab_size: 8,
            embed_dim: 16,
            activation: Activation::QuickGelu,
            intermediate_size: 32,
            max_position_embeddings: 8,
            pad_with: None,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            projection_dim: 12,
        },
        vision_config: ClipVisionConfig {
            embed_dim: 16,
            activation: Activation::QuickGelu,
            intermediate_size: 32,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            projection_dim: 12,
            num_channels: 3,
            image_size: 32,
            patch_size: 8,
        },
        logit_scale_init_value: 2.6592,
        image_size: 32,
    };
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    // Real checkpoints carry the class embedding; candle would otherwise draw one at random.
    varmap
        .get(
            16,
            "vision_model.embeddings.class_embedding",
            candle_nn::Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
    ClipModel::new(vb, &cfg).unwrap();
    varmap.save(dir.join("model.safetensors")).unwrap();
    let config = serde_json::json!({
        "projection_dim": 12,
        "text_config": {"vocab_size": 8, "hidden_size": 16, "intermediate_size": 32,
            "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 8},
        "vision_config": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
            "num_attention_heads": 2, "image_size": 32, "patch_size": 8}
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let mut vocab = serde_json::Map::new();
    for (i, w) in WORDS.iter().enumerate() {
        vocab.insert(w.to_string(), (i as u64).into());
    }
    vocab.insert("[UNK]".into(), 6u64.into());
    // The end-of-text token has the highest id: CLIP pools the text at argmax(id).
    vocab.insert("<|endoftext|>".into(), 7u64.into());
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 0}}],
            "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [7], "tokens": ["<|endoftext|>"]}}},
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
}

#[test]
fn clip_scorer_loads_hf_layout_and_scores_every_entry() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_clip(dir.path());
    let clip = ClipScorer::load(dir.path(), &Device::Cpu).unwrap();
    let texts = clip.embed_texts(&["a photo of a cat", "dog"]).unwrap();
    assert_eq!(texts.dims(), &[2, 12]);
    let info = CodebookInfo {
        source: "tiny".into(),
        marker: WordMarker::SentencePiece,
        filter: VocabFilter::default(),
        vocab_size: 3,
        projection: None,
    };
    let codebook = Codebook::new(
        info,
        vec![0, 1, 2],
        ["\u{2581}cat", "\u{2581}dog", "\u{2581}shoe"]
            .map(String::from)
            .to_vec(),
        Tensor::ones((3, 4), DType::F32, &Device::Cpu).unwrap(),
    )
    .unwrap();
    let cache = dir.path().join("words.safetensors");
    let scorer = CodebookScorer::new(clip, &codebook, Some(&cache)).unwrap();
    assert!(cache.is_file(), "word embeddings are cached");
    let images = Tensor::rand(0f32, 1f32, (2, 1, 28, 28), &Device::Cpu).unwrap();
    let rel = scorer.relevance(&images).unwrap();
    assert_eq!(rel.dims(), &[2, 3]);
    let max: f32 = rel.abs().unwrap().max_all().unwrap().to_scalar().unwrap();
    // Cosines of unit vectors, in f32: normalising a D-vector (a sum of D squares, a sqrt, a
    // division) leaves its norm within (D/2 + 2) 2^-24 of 1, and the D-term dot adds D 2^-24,
    // so |cos| <= 1 + (2D + 4) 2^-24 to first order; EPSILON = 2^-23 doubles that.
    let d = texts.dims()[1] as f32;
    assert!(
        max <= 1.0 + (2.0 * d + 4.0) * f32::EPSILON,
        "cosine relevance, got {max}"
    );
    // Reloading reads the cached word embeddings and scores the same.
    let again = CodebookScorer::new(
        ClipScorer::load(dir.path(), &Device::Cpu).unwrap(),
        &codebook,
        Some(&cache),
    )
    .unwrap();
    let a: Vec<f32> = rel.flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = again
        .relevance(&images)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(a, b);

    // A missing weights file is an error naming it.
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let err = ClipScorer::load(dir.path(), &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("model.safetensors"), "{err}");
}
