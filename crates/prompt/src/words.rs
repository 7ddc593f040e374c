//! Image words an LLM writes, mapped back to codebook entries (generation, SPAE paper Sec. 3.3
//! and 4.3): words that are not codebook entries are mapped to the nearest entry or replaced,
//! and counted.

use std::collections::HashMap;

use serde::Serialize;

/// The codebook's words, for looking up what a model wrote.
pub struct WordIndex {
    words: Vec<String>,
    by_lower: HashMap<String, usize>,
}

/// How a model's words became codebook entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MappedWords {
    /// Codebook entries, in the order written.
    pub entries: Vec<usize>,
    /// Words that are entries (case aside).
    pub exact: usize,
    /// Words mapped to the entry sharing their longest prefix (at least 3 letters).
    pub by_prefix: usize,
    /// Words with no entry near them, dropped.
    pub unknown: Vec<String>,
}

impl WordIndex {
    pub fn new(words: &[&str]) -> Self {
        let mut by_lower = HashMap::with_capacity(words.len());
        for (i, w) in words.iter().enumerate() {
            by_lower.entry(w.to_lowercase()).or_insert(i);
        }
        Self {
            words: words.iter().map(|w| w.to_lowercase()).collect(),
            by_lower,
        }
    }

    /// The entry of `word`: itself (case-insensitive), else the entry sharing its longest
    /// prefix of at least 3 characters (a model that writes "sneakers" meant "sneaker").
    pub fn lookup(&self, word: &str) -> Option<(usize, bool)> {
        let w = word.to_lowercase();
        if let Some(&i) = self.by_lower.get(&w) {
            return Some((i, true));
        }
        let common =
            |a: &str, b: &str| a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
        let (best, len) = self
            .words
            .iter()
            .enumerate()
            .map(|(i, e)| (i, common(&w, e)))
            .max_by_key(|&(i, n)| (n, std::cmp::Reverse(i)))?;
        (len >= 3).then_some((best, false))
    }

    /// Words of `text` (split on whitespace, punctuation trimmed), mapped to entries.
    pub fn map_text(&self, text: &str) -> MappedWords {
        let mut out = MappedWords::default();
        for raw in text.split_whitespace() {
            let word = raw.trim_matches(|c: char| !c.is_alphanumeric());
            if word.is_empty() {
                continue;
            }
            match self.lookup(word) {
                Some((i, true)) => {
                    out.entries.push(i);
                    out.exact += 1;
                }
                Some((i, false)) => {
                    out.entries.push(i);
                    out.by_prefix += 1;
                }
                None => out.unknown.push(word.to_string()),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_exact_prefix_and_unknown_words() {
        let index = WordIndex::new(&["sneaker", "boot", "Shirt", "sandal"]);
        let m = index.map_text("Boot, sneakers shirt! zzz qq sandalwood\n");
        assert_eq!(m.entries, vec![1, 0, 2, 3]);
        assert_eq!(m.exact, 2);
        assert_eq!(m.by_prefix, 2);
        assert_eq!(m.unknown, vec!["zzz", "qq"]);
        assert_eq!(index.map_text("").entries, Vec::<usize>::new());
        assert_eq!(index.map_text(" ... ").unknown, Vec::<String>::new());
    }
}
