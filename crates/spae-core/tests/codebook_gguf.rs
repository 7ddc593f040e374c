//! The codebook read from the real Gemma 3 and SmolLM2 GGUF files (fetched into the cache
//! on first use). Expected ids and rows were read independently with the `gguf` Python
//! package (GGUFReader + gguf.quants.dequantize).

use candle_core::Device;
use spae_core::{Codebook, VocabFilter, WordMarker};

fn gguf(name: &str) -> std::path::PathBuf {
    spae_assets::AssetCache::from_env()
        .fetch_named(name)
        .unwrap_or_else(|e| panic!("fetching {name}: {e}"))
}

fn row(cb: &Codebook, word: &str) -> Vec<f32> {
    let i = cb
        .index_of_word(word)
        .unwrap_or_else(|| panic!("{word} missing"));
    cb.embeddings().get(i).unwrap().to_vec1().unwrap()
}

/// The references are printed to 6 decimals: within half a unit of the 6th, 5e-7, of the
/// stored value, which both readers dequantize exactly (an f16 scale times a small integer is
/// an f32); EPSILON * |w| covers the rounding of the literal and of the difference. (Measured:
/// at most 4.9e-7.)
fn assert_close(got: &[f32], want: &[f32]) {
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - w).abs() <= 0.5e-6 + f32::EPSILON * w.abs(),
            "{got:?} vs {want:?}"
        );
    }
}

#[test]
fn gemma3_codebook_sizes_ids_and_rows() {
    let path = gguf("gemma3-270m");
    let cb = Codebook::from_gguf(&path, &VocabFilter::default(), &Device::Cpu).unwrap();
    assert_eq!(
        cb.len(),
        65_743,
        "default filter with case-insensitive dedupe"
    );
    assert_eq!(cb.dim(), 640);
    assert_eq!(cb.info().marker, WordMarker::SentencePiece);
    assert_eq!(cb.info().vocab_size, 262_144);
    for (word, id) in [
        ("cat", 5866),
        ("dog", 4799),
        ("shoe", 23990),
        ("sneaker", 102248),
        ("seven", 6819),
    ] {
        let i = cb.index_of_word(word).unwrap();
        assert_eq!(cb.token_ids()[i], id, "{word}");
        assert_eq!(cb.pieces()[i], format!("\u{2581}{word}"));
    }
    assert_close(
        &row(&cb, "cat")[..4],
        &[0.049591, 0.032425, -0.001907, -0.035286],
    );
    assert_close(
        &row(&cb, "sneaker")[..4],
        &[-0.035842, -0.000607, 0.024907, -0.007897],
    );
    // Every Gemma 3 row has L2 norm ~1.03 (why SAQ, not RQ: SPAE paper, Sec. 3.2).
    let norms: Vec<f32> = cb.sq_norms().sqrt().unwrap().to_vec1().unwrap();
    // Measured 1.029 to 1.033 (a norm computed in f32 is good to ~1e-6): within 3% of 1.03
    // is "the same scale"; a row read at the wrong scale (e.g. times sqrt(640), Gemma's
    // embedding multiplier) or from another tensor is far outside.
    assert!(
        norms.iter().all(|n| (1.0..1.06).contains(n)),
        "norm out of range"
    );

    let no_dedupe = VocabFilter {
        dedupe_case_insensitive: false,
        ..VocabFilter::default()
    };
    let full = Codebook::from_gguf(&path, &no_dedupe, &Device::Cpu).unwrap();
    assert_eq!(full.len(), 86_453);
}

#[test]
fn smollm2_codebook_sizes_ids_and_rows() {
    let path = gguf("smollm2-135m");
    let cb = Codebook::from_gguf(&path, &VocabFilter::default(), &Device::Cpu).unwrap();
    assert_eq!(cb.len(), 24_839);
    assert_eq!(cb.dim(), 576);
    assert_eq!(cb.info().marker, WordMarker::Gpt2);
    for (word, id) in [
        ("cat", 2644),
        ("dog", 2767),
        ("shoe", 21120),
        ("seven", 4962),
    ] {
        assert_eq!(
            cb.token_ids()[cb.index_of_word(word).unwrap()],
            id,
            "{word}"
        );
    }
    assert!(
        cb.index_of_word("sneaker").is_none(),
        "not a single SmolLM2 token"
    );
    assert_close(
        &row(&cb, "cat")[..4],
        &[-0.107861, 0.182644, -0.069031, -0.037392],
    );
    assert_close(
        &row(&cb, "shoe")[..4],
        &[0.15406, 0.159874, 0.058136, 0.107552],
    );

    let capped = VocabFilter {
        max_entries: Some(1000),
        ..VocabFilter::default()
    };
    let small = Codebook::from_gguf(&path, &capped, &Device::Cpu).unwrap();
    assert_eq!(small.len(), 1000);
    assert_eq!(small.token_ids(), &cb.token_ids()[..1000]);
}

#[test]
fn not_a_gguf_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("model.gguf");
    std::fs::write(&p, b"GGUF but not really").unwrap();
    let err = Codebook::from_gguf(&p, &VocabFilter::default(), &Device::Cpu).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("model.gguf") && msg.contains("GGUF"), "{msg}");
}
