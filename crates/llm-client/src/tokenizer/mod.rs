//! Tokenizers built from GGUF metadata (`tokenizer.ggml.*`), so a GGUF file is all a local
//! model needs: SentencePiece-style (`llama`, Gemma 3) and GPT-2 byte-level BPE (`gpt2`, SmolLM2).

mod bpe;
mod sentencepiece;

use std::collections::HashMap;
use std::fmt;

use candle_core::quantized::gguf_file::{Content, Value};

pub use bpe::Bpe;
pub use sentencepiece::SentencePiece;

use crate::error::{LlmError, Result};

/// GGUF `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
pub(crate) mod token_type {
    pub const NORMAL: i32 = 1;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const BYTE: i32 = 6;
}

/// The subword model proper, applied to text between special tokens.
#[derive(Clone)]
enum Model {
    SentencePiece(SentencePiece),
    Bpe(Bpe),
}

/// A tokenizer read from a GGUF file.
#[derive(Clone)]
pub struct Tokenizer {
    model: Model,
    tokens: Vec<String>,
    /// Control and user-defined tokens, matched in the text before the subword model runs
    /// (as Hugging Face `added_tokens` are): first char -> (text, id), longest first.
    specials: HashMap<char, Vec<(String, u32)>>,
    bos: Option<u32>,
    eos: Vec<u32>,
    add_bos: bool,
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.model {
            Model::SentencePiece(_) => "sentencepiece",
            Model::Bpe(_) => "bpe",
        };
        f.debug_struct("Tokenizer")
            .field("kind", &kind)
            .field("vocab", &self.tokens.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish()
    }
}

fn meta<'a>(content: &'a Content, key: &str) -> Result<&'a Value> {
    content
        .metadata
        .get(key)
        .ok_or_else(|| LlmError::Tokenizer(format!("missing GGUF metadata {key}")))
}

fn bad(key: &str, e: candle_core::Error) -> LlmError {
    LlmError::Tokenizer(format!("GGUF metadata {key}: {e}"))
}

fn strings(content: &Content, key: &str) -> Result<Vec<String>> {
    meta(content, key)?
        .to_vec()
        .map_err(|e| bad(key, e))?
        .iter()
        .map(|v| v.to_string().cloned().map_err(|e| bad(key, e)))
        .collect()
}

fn optional_u32(content: &Content, key: &str) -> Result<Option<u32>> {
    content
        .metadata
        .get(key)
        .map(|v| v.to_u32().map_err(|e| bad(key, e)))
        .transpose()
}

impl Tokenizer {
    /// Build the tokenizer described by a GGUF file's metadata.
    pub fn from_gguf(content: &Content) -> Result<Self> {
        let kind = meta(content, "tokenizer.ggml.model")?
            .to_string()
            .map_err(|e| bad("tokenizer.ggml.model", e))?
            .clone();
        let tokens = strings(content, "tokenizer.ggml.tokens")?;
        let types: Vec<i32> = match content.metadata.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .to_vec()
                .map_err(|e| bad("tokenizer.ggml.token_type", e))?
                .iter()
                .map(|v| v.to_i32().map_err(|e| bad("tokenizer.ggml.token_type", e)))
                .collect::<Result<_>>()?,
            None => vec![token_type::NORMAL; tokens.len()],
        };
        if types.len() != tokens.len() {
            return Err(LlmError::Tokenizer(format!(
                "{} token types for {} tokens",
                types.len(),
                tokens.len()
            )));
        }
        let model = match kind.as_str() {
            "llama" => {
                let scores: Vec<f32> = meta(content, "tokenizer.ggml.scores")?
                    .to_vec()
                    .map_err(|e| bad("tokenizer.ggml.scores", e))?
                    .iter()
                    .map(|v| v.to_f32().map_err(|e| bad("tokenizer.ggml.scores", e)))
                    .collect::<Result<_>>()?;
                let unk = optional_u32(content, "tokenizer.ggml.unknown_token_id")?;
                Model::SentencePiece(SentencePiece::new(&tokens, &scores, &types, unk)?)
            }
            "gpt2" => {
                let merges = strings(content, "tokenizer.ggml.merges")?;
                Model::Bpe(Bpe::new(&tokens, &merges)?)
            }
            other => {
                return Err(LlmError::Tokenizer(format!(
                    "tokenizer model {other:?} is not supported (only llama and gpt2)"
                )))
            }
        };
        let mut specials: HashMap<char, Vec<(String, u32)>> = HashMap::new();
        for (id, (text, ty)) in tokens.iter().zip(&types).enumerate() {
            if *ty == token_type::CONTROL || *ty == token_type::USER_DEFINED {
                // Matched on the raw text: llama.cpp's converter stores Gemma's whitespace-run
                // tokens ("  ", 62 of them, user-defined) with real spaces, and Hugging Face
                // matches them, as added tokens, before the subword model.
                if let Some(first) = text.chars().next() {
                    specials
                        .entry(first)
                        .or_default()
                        .push((text.clone(), id as u32));
                }
            }
        }
        for list in specials.values_mut() {
            list.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        }
        let bos = optional_u32(content, "tokenizer.ggml.bos_token_id")?;
        let mut eos: Vec<u32> = optional_u32(content, "tokenizer.ggml.eos_token_id")?
            .into_iter()
            .collect();
        // Chat-tuned models end a turn with their own token; stop there too.
        for extra in ["<end_of_turn>", "<|im_end|>"] {
            if let Some(id) = tokens.iter().position(|t| t == extra) {
                eos.push(id as u32);
            }
        }
        let add_bos = match content.metadata.get("tokenizer.ggml.add_bos_token") {
            Some(v) => v
                .to_bool()
                .map_err(|e| bad("tokenizer.ggml.add_bos_token", e))?,
            None => false,
        };
        Ok(Self {
            model,
            tokens,
            specials,
            bos,
            eos,
            add_bos,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The BOS token, if the model wants one at the start of a text prompt.
    pub fn bos_to_add(&self) -> Option<u32> {
        self.bos.filter(|_| self.add_bos)
    }

    pub fn is_eos(&self, id: u32) -> bool {
        self.eos.contains(&id)
    }

    /// Token ids of `text`, without BOS. Special tokens written in the text (`<start_of_turn>`)
    /// become their ids.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        let mut start = 0;
        let mut pos = 0;
        while pos < text.len() {
            let rest = &text[pos..];
            let Some(c) = rest.chars().next() else { break };
            let special = self
                .specials
                .get(&c)
                .and_then(|list| list.iter().find(|(t, _)| rest.starts_with(t.as_str())));
            match special {
                Some((t, id)) => {
                    self.encode_plain(&text[start..pos], &mut ids);
                    ids.push(*id);
                    pos += t.len();
                    start = pos;
                }
                None => pos += c.len_utf8(),
            }
        }
        self.encode_plain(&text[start..], &mut ids);
        ids
    }

    fn encode_plain(&self, text: &str, out: &mut Vec<u32>) {
        if text.is_empty() {
            return;
        }
        match &self.model {
            Model::SentencePiece(m) => m.encode(&SentencePiece::normalize(text), out),
            Model::Bpe(m) => m.encode(text, out),
        }
    }

    /// Text of `ids`. Bytes that do not form valid UTF-8 (a sequence cut mid-character)
    /// become U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let mut bytes = Vec::new();
        for &id in ids {
            let token = self
                .tokens
                .get(id as usize)
                .ok_or(LlmError::TokenOutOfRange {
                    id,
                    vocab: self.tokens.len(),
                })?;
            match &self.model {
                Model::SentencePiece(m) => m.decode_token(id, token, &mut bytes),
                Model::Bpe(m) => m.decode_token(token, &mut bytes),
            }
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The text of one token as stored in the vocabulary.
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }
}
