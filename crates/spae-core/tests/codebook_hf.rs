//! The codebook read from an HF-layout directory (tokenizer.json + safetensors), written here.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use spae_core::{Codebook, VocabFilter, WordMarker};

fn write_dir(tokenizer: serde_json::Value, rows: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), tokenizer.to_string()).unwrap();
    let data: Vec<f32> = (0..rows * 3).map(|i| i as f32).collect();
    let emb = Tensor::from_vec(data, (rows, 3), &Device::Cpu).unwrap();
    let tensors: HashMap<String, Tensor> = [("model.embed_tokens.weight".to_string(), emb)].into();
    candle_core::safetensors::save(&tensors, dir.path().join("model.safetensors")).unwrap();
    dir
}

#[test]
fn bpe_tokenizer_json_and_safetensors() {
    let tok = serde_json::json!({
        "added_tokens": [{"id": 0, "content": "<|endoftext|>", "special": true}],
        "model": {"type": "BPE", "vocab": {
            "<|endoftext|>": 0, "\u{0120}the": 1, "\u{0120}Cat": 2, "\u{0120}cat": 3, "ing": 4, "\u{0120}a": 5, "\u{0120}dog": 6
        }}
    });
    let dir = write_dir(tok, 7);
    let cb = Codebook::from_hf_dir(dir.path(), &VocabFilter::default(), &Device::Cpu).unwrap();
    assert_eq!(cb.info().marker, WordMarker::Gpt2);
    assert_eq!(cb.token_ids(), &[1, 2, 6]);
    assert_eq!(cb.word(1), "Cat");
    assert_eq!(
        cb.index_of_word("cat"),
        Some(1),
        "case-insensitive fallback"
    );
    let dog: Vec<f32> = cb.embeddings().get(2).unwrap().to_vec1().unwrap();
    assert_eq!(dog, vec![18.0, 19.0, 20.0], "row 6 of the table");
}

#[test]
fn unigram_tokenizer_json() {
    let tok = serde_json::json!({
        "model": {"type": "Unigram", "vocab": [["<unk>", 0.0], ["\u{2581}house", -1.0], ["\u{2581}x", -2.0], ["\u{2581}tree", -3.0]]}
    });
    let dir = write_dir(tok, 4);
    let cb = Codebook::from_hf_dir(dir.path(), &VocabFilter::default(), &Device::Cpu).unwrap();
    assert_eq!(cb.info().marker, WordMarker::SentencePiece);
    assert_eq!(cb.token_ids(), &[1, 3]);
}

#[test]
fn table_smaller_than_vocab_is_an_error() {
    let tok = serde_json::json!({"model": {"type": "BPE", "vocab": {"\u{0120}cat": 0, "\u{0120}dog": 9}}});
    let dir = write_dir(tok, 4);
    let err = Codebook::from_hf_dir(dir.path(), &VocabFilter::default(), &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("token id 9"), "{err}");
}

#[test]
fn missing_tokenizer_json_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = Codebook::from_hf_dir(dir.path(), &VocabFilter::default(), &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
}
