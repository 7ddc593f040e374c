//! SentencePiece-style subword model from GGUF scores (llama.cpp's `llm_tokenizer_spm`):
//! start from characters, repeatedly merge the adjacent pair whose concatenation is the
//! vocabulary entry of highest score, and spell unknown characters as `<0xXX>` byte tokens.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use super::token_type;
use crate::error::{LlmError, Result};

const SPACE: char = '\u{2581}';

#[derive(Clone)]
pub struct SentencePiece {
    ids: HashMap<String, u32>,
    scores: Vec<f32>,
    /// Byte value -> id of its `<0xXX>` token.
    byte_ids: Vec<Option<u32>>,
    /// Id -> byte, for byte tokens.
    byte_of: HashMap<u32, u8>,
    unk: Option<u32>,
}

struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

struct Bigram {
    score: f32,
    left: usize,
    len: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    // Max-heap: highest score first, then the leftmost pair.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then(other.left.cmp(&self.left))
    }
}

impl SentencePiece {
    pub fn new(tokens: &[String], scores: &[f32], types: &[i32], unk: Option<u32>) -> Result<Self> {
        if scores.len() != tokens.len() {
            return Err(LlmError::Tokenizer(format!(
                "{} scores for {} tokens",
                scores.len(),
                tokens.len()
            )));
        }
        let mut ids = HashMap::with_capacity(tokens.len());
        let mut byte_ids = vec![None; 256];
        let mut byte_of = HashMap::new();
        for (id, (text, ty)) in tokens.iter().zip(types).enumerate() {
            let id = id as u32;
            if *ty == token_type::BYTE {
                let byte = text
                    .strip_prefix("<0x")
                    .and_then(|h| h.strip_suffix('>'))
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| LlmError::Tokenizer(format!("byte token {id} is {text:?}")))?;
                byte_ids[byte as usize] = Some(id);
                byte_of.insert(id, byte);
            } else {
                // First id wins for duplicated texts, as in llama.cpp.
                ids.entry(text.clone()).or_insert(id);
            }
        }
        Ok(Self {
            ids,
            scores: scores.to_vec(),
            byte_ids,
            byte_of,
            unk,
        })
    }

    /// Gemma writes spaces as U+2581 and adds no dummy prefix (`add_space_prefix` is false).
    pub fn normalize(text: &str) -> String {
        text.replace(' ', &SPACE.to_string())
    }

    /// Encode normalized text holding no special tokens.
    pub fn encode(&self, text: &str, out: &mut Vec<u32>) {
        let mut symbols: Vec<Symbol> = text
            .char_indices()
            .map(|(start, c)| Symbol {
                start,
                len: c.len_utf8(),
                prev: None,
                next: None,
            })
            .collect();
        let n = symbols.len();
        for (i, s) in symbols.iter_mut().enumerate() {
            s.prev = i.checked_sub(1);
            s.next = (i + 1 < n).then_some(i + 1);
        }
        let mut heap = BinaryHeap::new();
        for i in 1..n {
            self.push_bigram(text, &symbols, i - 1, i, &mut heap);
        }
        while let Some(b) = heap.pop() {
            let Some(right) = symbols[b.left].next else {
                continue;
            };
            // A stale entry: one side has merged since it was pushed.
            if symbols[b.left].len == 0
                || symbols[right].len == 0
                || symbols[b.left].len + symbols[right].len != b.len
            {
                continue;
            }
            symbols[b.left].len += symbols[right].len;
            symbols[right].len = 0;
            let after = symbols[right].next;
            symbols[b.left].next = after;
            if let Some(a) = after {
                symbols[a].prev = Some(b.left);
            }
            if let Some(p) = symbols[b.left].prev {
                self.push_bigram(text, &symbols, p, b.left, &mut heap);
            }
            if let Some(a) = after {
                self.push_bigram(text, &symbols, b.left, a, &mut heap);
            }
        }
        let mut i = if n > 0 { Some(0) } else { None };
        while let Some(k) = i {
            let s = &symbols[k];
            let piece = &text[s.start..s.start + s.len];
            match self.ids.get(piece) {
                Some(&id) => out.push(id),
                None => {
                    for byte in piece.bytes() {
                        if let Some(id) = self.byte_ids[byte as usize].or(self.unk) {
                            out.push(id);
                        }
                    }
                }
            }
            i = s.next;
        }
    }

    fn push_bigram(
        &self,
        text: &str,
        symbols: &[Symbol],
        left: usize,
        right: usize,
        heap: &mut BinaryHeap<Bigram>,
    ) {
        let start = symbols[left].start;
        let len = symbols[left].len + symbols[right].len;
        if let Some(&id) = self.ids.get(&text[start..start + len]) {
            heap.push(Bigram {
                score: self.scores[id as usize],
                left,
                len,
            });
        }
    }

    pub fn decode_token(&self, id: u32, token: &str, bytes: &mut Vec<u8>) {
        match self.byte_of.get(&id) {
            Some(&b) => bytes.push(b),
            None => {
                for c in token.chars() {
                    let c = if c == SPACE { ' ' } else { c };
                    let mut buf = [0u8; 4];
                    bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
    }
}
