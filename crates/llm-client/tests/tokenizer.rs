//! Tokenizers built from GGUF metadata: Gemma 3 against Hugging Face `tokenizers` on the
//! reference tokenizer.json, and round trips for both models.

mod common;

use std::collections::HashMap;

use llm_client::LanguageModel;

const ROUND_TRIP_TEXTS: &[&str] = &[
    "The capital of France is Paris.",
    "  two leading spaces, trailing  ",
    "line one\nline two\n\n\ttabbed\r\nwindows",
    "3.14159 and 1,000,000 and 2024-05-17",
    "日本語のテキスト。中文。한국어.",
    "Emoji: 😀👍🏽 🇫🇷 ❤️ 🧑‍💻",
    "Ünïcödé àccents ß ø Ω Я",
    "fn main() { println!(\"{}\", x ** 2); } // code",
    "~!@#$%^&*()_+|}{:?><`'\"",
    "",
];

#[derive(serde::Deserialize)]
struct Oracle {
    cases: Vec<OracleCase>,
}

#[derive(serde::Deserialize)]
struct OracleCase {
    text: String,
    ids: Vec<u32>,
}

#[test]
fn gemma3_matches_reference_tokenizer_json() {
    let model = common::gemma();
    let oracle: Oracle =
        serde_json::from_str(include_str!("fixtures/gemma3_oracle.json")).expect("fixture");
    let mut failures = Vec::new();
    for case in &oracle.cases {
        let ids = model.tokenize(&case.text).expect("tokenize");
        if ids != case.ids {
            failures.push(format!(
                "{:?}\n  ours {:?}\n  ref  {:?}",
                case.text, ids, case.ids
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn gemma3_vocabulary_equals_reference_tokenizer_json() {
    let path = spae_assets::AssetCache::from_env()
        .fetch_named("gemma3-tokenizer-json")
        .expect("fetch tokenizer.json");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("parse");
    let vocab: HashMap<String, u64> =
        serde_json::from_value(json["model"]["vocab"].clone()).expect("vocab");
    let tok = common::gemma().tokenizer();
    assert_eq!(vocab.len(), tok.vocab_size());
    for (text, id) in vocab {
        // The GGUF stores Gemma's whitespace-run tokens with spaces, tokenizer.json with U+2581.
        let ours = tok
            .token_text(id as u32)
            .map(|t| t.replace(' ', "\u{2581}"));
        assert_eq!(ours.as_deref(), Some(text.as_str()), "id {id}");
    }
}

fn round_trip(model: &dyn LanguageModel) {
    for text in ROUND_TRIP_TEXTS {
        let ids = model.tokenize(text).expect("tokenize");
        assert_eq!(
            &model.detokenize(&ids).expect("detokenize"),
            text,
            "{ids:?}"
        );
    }
}

#[test]
fn gemma3_round_trips() {
    round_trip(common::gemma());
}

#[test]
fn smollm2_round_trips() {
    round_trip(common::smollm());
}

#[test]
fn smollm2_known_encodings() {
    let model = common::smollm();
    // Digits stand alone (SmolLM's pre-tokenizer); a leading space joins the word.
    let ids = model.tokenize(" 2024").expect("tokenize");
    assert_eq!(ids.len(), 5, "{ids:?}");
    let hello = model.tokenize("Hello world").expect("tokenize");
    assert_eq!(hello.len(), 2, "{hello:?}");
    // Special tokens written in text become their ids.
    let chat = model.tokenize("<|im_start|>user").expect("tokenize");
    assert_eq!(model.tokenizer().token_text(chat[0]), Some("<|im_start|>"));
}

#[test]
fn out_of_range_ids_are_an_error() {
    let model = common::smollm();
    assert!(model.detokenize(&[u32::MAX]).is_err());
}
