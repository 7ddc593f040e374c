//! Which vocabulary entries become codebook entries of the frozen language codebook (SPAE
//! paper, Sec. 3.1); the filter itself is **(ours)**.

use std::collections::HashSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// How a tokenizer marks the start of a word in its surface strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WordMarker {
    /// SentencePiece: `▁word` (Gemma, Llama 2).
    SentencePiece,
    /// GPT-2 byte-level BPE: `Ġword` (SmolLM2, GPT-2, RoBERTa).
    Gpt2,
}

impl WordMarker {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SentencePiece => "\u{2581}",
            Self::Gpt2 => "\u{0120}",
        }
    }

    /// `piece` without its leading marker, if any.
    pub fn strip(self, piece: &str) -> &str {
        piece.strip_prefix(self.as_str()).unwrap_or(piece)
    }

    /// The marker most surface strings in `pieces` start with.
    pub fn detect<'a>(pieces: impl IntoIterator<Item = &'a str>) -> Self {
        let (mut sp, mut bpe) = (0usize, 0usize);
        for p in pieces {
            if p.starts_with(Self::SentencePiece.as_str()) {
                sp += 1;
            } else if p.starts_with(Self::Gpt2.as_str()) {
                bpe += 1;
            }
        }
        if bpe > sp {
            Self::Gpt2
        } else {
            Self::SentencePiece
        }
    }
}

/// The vocabulary filter **(ours)**: keep whole words that start with the word-start marker,
/// ASCII letters only, at least `min_len` letters. Such words re-tokenize to themselves when
/// an API model reads them as space-separated text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VocabFilter {
    /// Keep only entries that begin with the word-start marker.
    pub word_start: bool,
    /// Keep only entries whose word is ASCII letters.
    pub ascii_letters_only: bool,
    /// Minimum word length, marker excluded.
    pub min_len: usize,
    /// Keep only token ids below this (frequent words come first in most vocabularies).
    pub max_token_id: Option<u32>,
    /// Keep the first (lowest id) of words that differ only in case ("Cat", "cat").
    pub dedupe_case_insensitive: bool,
    /// Keep at most this many entries, in token-id order (bounds nearest-neighbour cost).
    pub max_entries: Option<usize>,
    /// Words kept beyond `max_entries` and `max_token_id` (lowercase, marker excluded), so a
    /// task's own label words ("triangle", "teal") can be words of the first layer even when
    /// they are not among the most frequent **(ours)**. They still pass the per-entry rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// Keep only words of this word list **(ours)**: a frequent-first vocabulary also holds
    /// fragments that pass the other rules ("dri", "giv", "swe"), which spend codebook entries
    /// on strings that mean nothing to a reader. `include` words are exempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dictionary: Option<Dictionary>,
}

/// A word list, such as Debian's `wamerican`: one word per line. Only lines of ASCII letters
/// count (possessives like "cat's" are dropped), compared lowercase.
///
/// Checkpoints record its name and size; the words themselves are not stored (the codebook's
/// entries are).
#[derive(Clone, Serialize, Deserialize)]
pub struct Dictionary {
    /// Where the list came from (a catalog name or a file).
    pub name: String,
    /// Distinct lowercase words in it.
    pub words: usize,
    #[serde(skip)]
    set: Arc<HashSet<String>>,
}

impl Dictionary {
    /// The words of `text`, one per line, called `name`.
    pub fn from_text(name: impl Into<String>, text: &str) -> Self {
        Self::from_lines(name, text, |_| true)
    }

    /// The words of `text` that it writes in lowercase, called `name`: a list such as
    /// `wamerican` writes proper names capitalized ("Hilton", "Tulane"), and a codebook for
    /// describing images has no use for them; a word listed both ways ("Turkey", "turkey")
    /// stays.
    pub fn lowercase_from_text(name: impl Into<String>, text: &str) -> Self {
        Self::from_lines(name, text, |w| {
            w.starts_with(|c: char| c.is_ascii_lowercase())
        })
    }

    fn from_lines(name: impl Into<String>, text: &str, keep: impl Fn(&str) -> bool) -> Self {
        let set: HashSet<String> = text
            .lines()
            .map(str::trim)
            .filter(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_alphabetic()) && keep(w))
            .map(str::to_ascii_lowercase)
            .collect();
        Self {
            name: name.into(),
            words: set.len(),
            set: Arc::new(set),
        }
    }

    /// Whether `word` is in the list, ignoring case.
    pub fn contains(&self, word: &str) -> bool {
        self.set.contains(&word.to_lowercase())
    }
}

impl std::fmt::Debug for Dictionary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dictionary")
            .field("name", &self.name)
            .field("words", &self.words)
            .finish()
    }
}

/// Two lists are the same list when their name and size agree (a checkpoint read back has no
/// words).
impl PartialEq for Dictionary {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.words == other.words
    }
}
impl Eq for Dictionary {}

impl Default for VocabFilter {
    fn default() -> Self {
        Self {
            word_start: true,
            ascii_letters_only: true,
            min_len: 2,
            max_token_id: None,
            dedupe_case_insensitive: true,
            max_entries: None,
            include: Vec::new(),
            dictionary: None,
        }
    }
}

impl std::fmt::Display for VocabFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}",
            serde_json::to_string(self).map_err(|_| std::fmt::Error)?
        )
    }
}

impl VocabFilter {
    /// Whether a single surface string passes the per-entry rules.
    pub fn accepts(&self, piece: &str, marker: WordMarker) -> bool {
        let word = match piece.strip_prefix(marker.as_str()) {
            Some(w) => w,
            None if self.word_start => return false,
            None => piece,
        };
        if self.ascii_letters_only && !word.bytes().all(|b| b.is_ascii_alphabetic()) {
            return false;
        }
        word.chars().count() >= self.min_len
    }

    /// Indices (token ids) of the kept entries, ascending. `is_normal(id)` says whether the
    /// tokenizer marks the entry as a normal token (not control, byte or unused).
    pub fn select(
        &self,
        pieces: &[String],
        marker: WordMarker,
        is_normal: impl Fn(usize) -> bool,
    ) -> Vec<usize> {
        let mut seen = HashSet::new();
        let mut kept = Vec::new();
        for (id, piece) in pieces.iter().enumerate() {
            if self.max_token_id.is_some_and(|m| id as u64 >= m as u64) {
                break;
            }
            if !is_normal(id) || !self.accepts(piece, marker) {
                continue;
            }
            if let Some(d) = &self.dictionary {
                if !d.contains(marker.strip(piece)) {
                    continue;
                }
            }
            if self.dedupe_case_insensitive && !seen.insert(marker.strip(piece).to_lowercase()) {
                continue;
            }
            kept.push(id);
            if self.max_entries.is_some_and(|m| kept.len() >= m) {
                break;
            }
        }
        if !self.include.is_empty() {
            let mut have: HashSet<String> = kept
                .iter()
                .map(|&id| marker.strip(&pieces[id]).to_lowercase())
                .collect();
            let wanted: HashSet<String> = self.include.iter().map(|w| w.to_lowercase()).collect();
            for (id, piece) in pieces.iter().enumerate() {
                let word = marker.strip(piece).to_lowercase();
                // The lowest id of each wanted word, case-insensitive like the dedupe.
                if wanted.contains(&word)
                    && is_normal(id)
                    && self.accepts(piece, marker)
                    && have.insert(word)
                {
                    kept.push(id);
                }
            }
            kept.sort_unstable();
        }
        kept
    }

    /// The `include` words that [`VocabFilter::select`] could not keep: no entry of `pieces`
    /// among `kept` (its result) spells them, because the vocabulary has no whole-word,
    /// normal token for them.
    pub fn missing_includes(
        &self,
        pieces: &[String],
        marker: WordMarker,
        kept: &[usize],
    ) -> Vec<String> {
        let have: HashSet<String> = kept
            .iter()
            .map(|&id| marker.strip(&pieces[id]).to_lowercase())
            .collect();
        self.include
            .iter()
            .filter(|w| !have.contains(&w.to_lowercase()))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_filter_keeps_whole_ascii_words() {
        let f = VocabFilter::default();
        let sp = WordMarker::SentencePiece;
        assert!(f.accepts("\u{2581}cat", sp));
        assert!(!f.accepts("cat", sp), "no word-start marker");
        assert!(!f.accepts("\u{2581}a", sp), "too short");
        assert!(!f.accepts("\u{2581}caf\u{e9}", sp), "not ASCII");
        assert!(!f.accepts("\u{2581}co-op", sp), "not letters");
        assert!(!f.accepts("\u{2581}42", sp));
        assert!(f.accepts("\u{0120}dog", WordMarker::Gpt2));
    }

    #[test]
    fn select_dedupes_case_and_caps() {
        let pieces: Vec<String> = [
            "<pad>",
            "\u{2581}Cat",
            "\u{2581}cat",
            "\u{2581}dog",
            "\u{2581}emu",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let f = VocabFilter::default();
        assert_eq!(
            f.select(&pieces, WordMarker::SentencePiece, |i| i != 0),
            vec![1, 3, 4]
        );
        let no_dedupe = VocabFilter {
            dedupe_case_insensitive: false,
            max_entries: Some(2),
            ..f.clone()
        };
        assert_eq!(
            no_dedupe.select(&pieces, WordMarker::SentencePiece, |_| true),
            vec![1, 2]
        );
        let capped = VocabFilter {
            max_token_id: Some(4),
            ..f
        };
        assert_eq!(
            capped.select(&pieces, WordMarker::SentencePiece, |_| true),
            vec![1, 3]
        );
    }

    #[test]
    fn include_keeps_label_words_past_the_cap() {
        let pieces: Vec<String> = [
            "\u{2581}the",
            "\u{2581}and",
            "\u{2581}circle",
            "\u{2581}Triangle",
            "\u{2581}triangle",
            "tri",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let f = VocabFilter {
            max_entries: Some(2),
            include: vec!["triangle".into(), "Circle".into(), "teal".into()],
            ..VocabFilter::default()
        };
        let sp = WordMarker::SentencePiece;
        // the two most frequent, then each included word once (its lowest id), in id order
        let kept = f.select(&pieces, sp, |_| true);
        assert_eq!(kept, vec![0, 1, 2, 3]);
        assert_eq!(
            f.missing_includes(&pieces, sp, &kept),
            vec!["teal".to_string()]
        );
        // an included word already among the kept ones is not added twice
        let g = VocabFilter {
            include: vec!["and".into()],
            ..f
        };
        assert_eq!(g.select(&pieces, sp, |_| true), vec![0, 1]);
    }

    #[test]
    fn dictionary_keeps_listed_words_and_includes() {
        let pieces: Vec<String> = [
            "\u{2581}the",
            "\u{2581}dri",
            "\u{2581}Dog",
            "\u{2581}giv",
            "\u{2581}emu",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let dict = Dictionary::from_text("test", "The\ndog\ndog's\ncat\n\n");
        assert_eq!(
            dict.words, 3,
            "the, dog, cat; the possessive and the blank line are not words"
        );
        let f = VocabFilter {
            dictionary: Some(dict),
            include: vec!["emu".into()],
            ..VocabFilter::default()
        };
        let sp = WordMarker::SentencePiece;
        // "dri" and "giv" are not in the list; "Dog" matches "dog"; "emu" is included by name.
        assert_eq!(f.select(&pieces, sp, |_| true), vec![0, 2, 4]);
        // A filter read back from a checkpoint has the name and size, not the words.
        let back: VocabFilter = serde_json::from_str(&f.to_string()).unwrap();
        assert_eq!(back, f);
    }

    #[test]
    fn a_lowercase_dictionary_drops_words_listed_only_capitalized() {
        let text = "Hilton\nTurkey\nturkey\nhouse\nJuan\n";
        assert_eq!(Dictionary::from_text("all", text).words, 4);
        let lower = Dictionary::lowercase_from_text("lower", text);
        assert_eq!(lower.words, 2, "turkey and house");
        // Matching ignores case as before: the token "Turkey" passes on the lowercase line.
        for (w, kept) in [
            ("Turkey", true),
            ("house", true),
            ("Hilton", false),
            ("juan", false),
        ] {
            assert_eq!(lower.contains(w), kept, "{w}");
        }
    }

    #[test]
    fn marker_detection() {
        assert_eq!(
            WordMarker::detect(["\u{0120}a", "\u{0120}b", "\u{2581}c"]),
            WordMarker::Gpt2
        );
        assert_eq!(
            WordMarker::detect(["\u{2581}a", "b"]),
            WordMarker::SentencePiece
        );
    }
}
