//! GPT-2 byte-level BPE from GGUF `tokenizer.ggml.merges` (Radford et al., 2019): bytes are
//! mapped to printable characters, the text is pre-split by a regex, and each piece is merged
//! pair by pair in merge-rank order.

use std::collections::HashMap;

use fancy_regex::Regex;

use crate::error::{LlmError, Result};

/// SmolLM's pre-tokenizer (llama.cpp `LLAMA_VOCAB_PRE_TYPE_SMOLLM`, Hugging Face
/// `Digits(individual_digits) + ByteLevel`): digits stand alone, then the GPT-2 pattern.
const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

#[derive(Clone)]
pub struct Bpe {
    ids: HashMap<String, u32>,
    /// (left id, right id) -> (rank, merged id).
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// Byte -> id of its one-character token.
    byte_ids: Vec<Option<u32>>,
    char_to_byte: HashMap<char, u8>,
    byte_to_char: Vec<char>,
    pattern: Regex,
}

/// GPT-2's reversible map from bytes to printable characters.
fn byte_to_char_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        table[b as usize] = if printable {
            char::from(b)
        } else {
            let c = char::from_u32(256 + n).unwrap_or('\0');
            n += 1;
            c
        };
    }
    table
}

impl Bpe {
    pub fn new(tokens: &[String], merges: &[String]) -> Result<Self> {
        let mut ids = HashMap::with_capacity(tokens.len());
        for (id, t) in tokens.iter().enumerate() {
            ids.entry(t.clone()).or_insert(id as u32);
        }
        let mut merge_map = HashMap::with_capacity(merges.len());
        for (rank, m) in merges.iter().enumerate() {
            let (a, b) = m
                .split_once(' ')
                .ok_or_else(|| LlmError::Tokenizer(format!("merge {rank} is {m:?}")))?;
            let lookup = |s: &str| {
                ids.get(s).copied().ok_or_else(|| {
                    LlmError::Tokenizer(format!(
                        "merge {rank} {m:?}: {s:?} is not in the vocabulary"
                    ))
                })
            };
            let merged = lookup(&format!("{a}{b}"))?;
            merge_map
                .entry((lookup(a)?, lookup(b)?))
                .or_insert((rank as u32, merged));
        }
        let byte_to_char = byte_to_char_table().to_vec();
        let mut byte_ids = vec![None; 256];
        let mut char_to_byte = HashMap::new();
        for (b, c) in byte_to_char.iter().enumerate() {
            byte_ids[b] = ids.get(&c.to_string()).copied();
            char_to_byte.insert(*c, b as u8);
        }
        let pattern = Regex::new(GPT2_PATTERN)
            .map_err(|e| LlmError::Tokenizer(format!("pre-tokenizer pattern: {e}")))?;
        Ok(Self {
            ids,
            merges: merge_map,
            byte_ids,
            char_to_byte,
            byte_to_char,
            pattern,
        })
    }

    /// Encode text holding no special tokens.
    pub fn encode(&self, text: &str, out: &mut Vec<u32>) {
        // Digits first: each digit is its own piece.
        let mut start = 0;
        for (i, c) in text.char_indices() {
            if c.is_numeric() {
                self.encode_chunk(&text[start..i], out);
                self.encode_piece(&text[i..i + c.len_utf8()], out);
                start = i + c.len_utf8();
            }
        }
        self.encode_chunk(&text[start..], out);
    }

    fn encode_chunk(&self, text: &str, out: &mut Vec<u32>) {
        let mut last = 0;
        for m in self.pattern.find_iter(text) {
            // The pattern ends in `\s+`, so it matches every char; a regex error
            // (backtrack limit) leaves the rest to be encoded as one piece below.
            let Ok(m) = m else { break };
            self.encode_piece(m.as_str(), out);
            last = m.end();
        }
        if last < text.len() {
            self.encode_piece(&text[last..], out);
        }
    }

    fn encode_piece(&self, piece: &str, out: &mut Vec<u32>) {
        if piece.is_empty() {
            return;
        }
        let mapped: String = piece
            .bytes()
            .map(|b| self.byte_to_char[b as usize])
            .collect();
        if let Some(&id) = self.ids.get(&mapped) {
            out.push(id);
            return;
        }
        let mut word: Vec<u32> = piece
            .bytes()
            .filter_map(|b| self.byte_ids[b as usize])
            .collect();
        loop {
            let best = word
                .windows(2)
                .enumerate()
                .filter_map(|(i, w)| self.merges.get(&(w[0], w[1])).map(|&(r, m)| (r, i, m)))
                .min();
            let Some((_, i, merged)) = best else { break };
            word[i] = merged;
            word.remove(i + 1);
        }
        out.extend(word);
    }

    pub fn decode_token(&self, token: &str, bytes: &mut Vec<u8>) {
        for c in token.chars() {
            match self.char_to_byte.get(&c) {
                Some(&b) => bytes.push(b),
                // Special tokens (`<|im_end|>`) are plain text, not byte-mapped.
                None => {
                    let mut buf = [0u8; 4];
                    bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
    }
}
