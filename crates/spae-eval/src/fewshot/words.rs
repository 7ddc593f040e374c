//! What stands for each image in a prompt: SPAE's words, oracle words, random words or the
//! teacher's words.

use std::collections::HashMap;

use std::path::Path;
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor, D};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use spae_core::scorer::top_relevant;
use spae_core::{Codebook, SemanticScorer, SpaeModel, TokenPyramid, VocabFilter};

use super::WordSource;
use crate::bail;
use crate::error::{Context, Result};
use crate::task::Task;

/// An image's words (layer order) and their LLM token ids, one token per word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageWords {
    pub words: Vec<String>,
    pub token_ids: Vec<u32>,
}

impl ImageWords {
    pub fn text(&self) -> String {
        self.words.join(" ")
    }

    /// The words and token ids of the first `layers` layers of `p`, in layer order.
    pub fn of_pyramid(p: &TokenPyramid, layers: usize) -> Self {
        let (mut words, mut token_ids) = (Vec::new(), Vec::new());
        for l in p.layers.iter().take(layers) {
            words.extend(l.words.iter().cloned());
            token_ids.extend(l.token_ids.iter().copied());
        }
        ImageWords { words, token_ids }
    }
}

/// How many entries nearest a class name the oracle draws from (20, as the oracle rows of the measured tables).
const ORACLE_NEIGHBOURS: usize = 20;
const BATCH: usize = 64;

/// Images by id, as a batch.
pub trait ImageStore {
    /// Images `ids` as a (B, C, S, S) tensor: `channels` x `size` x `size`, in [0, 1].
    fn load(&self, ids: &[&str], channels: usize, size: usize) -> Result<Tensor>;
}

impl ImageStore for Task {
    fn load(&self, ids: &[&str], channels: usize, size: usize) -> Result<Tensor> {
        Task::load(self, ids, channels, size)
    }
}

/// The teacher [`WordSource::Teacher`] reads, resolved for a run.
pub struct Teacher<'a> {
    /// The scorer spec ([`crate::scorer::load_scorer`]).
    pub scorer: &'a str,
    /// The data spec of the task, for the scorer's zero-shot captions.
    pub data: &'a str,
    /// The run's images at the teacher's side: the same image ids.
    pub images: &'a dyn ImageStore,
    pub channels: usize,
    pub image_size: usize,
}

/// Every image the episodes of `task` name, once, with the label it carries there (for the
/// oracle): what [`image_words`] takes.
pub fn episode_images(task: &Task) -> Vec<(&str, &str)> {
    let mut wanted: Vec<(&str, &str)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for ep in &task.episodes {
        for shot in ep.support.iter().chain([&ep.query]) {
            if seen.insert(shot.image.as_str()) {
                wanted.push((&shot.image, &shot.label));
            }
        }
    }
    wanted
}

/// Words of each image of `wanted` (id, class name), keyed by id; `images` holds them at the
/// checkpoint's side. `teacher`: the scorer of [`WordSource::Teacher`], which needs one.
/// Oracle and random words are drawn from a seed per (`seed`, id), so an id must name one
/// image across every call that shares a seed.
pub fn image_words(
    wanted: &[(&str, &str)],
    images: &dyn ImageStore,
    spae: &SpaeModel,
    depth: usize,
    source: WordSource,
    seed: u64,
    teacher: Option<&Teacher>,
) -> Result<HashMap<String, ImageWords>> {
    let n_words = spae.config().pyramid.tokens_up_to(depth);
    let codebook = spae.codebook();
    let entry = |i: usize| (codebook.word(i).to_string(), codebook.token_ids()[i]);
    let mut out = HashMap::with_capacity(wanted.len());
    match source {
        WordSource::Spae => {
            let cfg = spae.config();
            let bar = crate::progress::bar(wanted.len() as u64, "tokenizing images");
            for chunk in wanted.chunks(BATCH) {
                let ids: Vec<&str> = chunk.iter().map(|(id, _)| *id).collect();
                let batch = images.load(&ids, cfg.in_channels, cfg.image_size)?;
                let pyramids = spae.tokenize(&batch, depth)?;
                for ((id, _), p) in chunk.iter().zip(pyramids) {
                    out.insert(id.to_string(), ImageWords::of_pyramid(&p, depth));
                }
                bar.inc(chunk.len() as u64);
            }
            bar.finish_and_clear();
        }
        WordSource::Oracle => {
            let mut neighbours: HashMap<&str, Vec<usize>> = HashMap::new();
            for (id, label) in wanted {
                if !neighbours.contains_key(label) {
                    neighbours.insert(label, class_neighbours(codebook, label)?);
                }
                let near = &neighbours[label];
                let mut rng = StdRng::seed_from_u64(item_seed(seed, id));
                let (words, token_ids) = (0..n_words)
                    .map(|_| near.choose(&mut rng).map(|&i| entry(i)))
                    .collect::<Option<(Vec<_>, Vec<_>)>>()
                    .with_context(|| format!("no codebook entries near {label:?}"))?;
                out.insert(id.to_string(), ImageWords { words, token_ids });
            }
        }
        WordSource::Random => {
            for (id, _) in wanted {
                let mut rng = StdRng::seed_from_u64(item_seed(seed, id));
                let (words, token_ids) = (0..n_words)
                    .map(|_| entry(rng.gen_range(0..codebook.len())))
                    .unzip();
                out.insert(id.to_string(), ImageWords { words, token_ids });
            }
        }
        WordSource::Teacher => {
            let Some(t) = teacher else {
                bail!("--words teacher needs --teacher SPEC");
            };
            if n_words > codebook.len() {
                bail!(
                    "--words teacher: {n_words} words per image, the codebook has {} entries",
                    codebook.len()
                );
            }
            let scorer = crate::scorer::load_scorer(t.scorer, codebook, t.data)
                .with_context(|| format!("--teacher {}", t.scorer))?;
            let bar = crate::progress::bar(wanted.len() as u64, "teacher scoring images");
            for chunk in wanted.chunks(BATCH) {
                let ids: Vec<&str> = chunk.iter().map(|(id, _)| *id).collect();
                let images = t.images.load(&ids, t.channels, t.image_size)?;
                let top = top_entries(&scorer.relevance(&images)?, n_words)?;
                for ((id, _), entries) in chunk.iter().zip(top) {
                    let (words, token_ids) = entries.into_iter().map(entry).unzip();
                    out.insert(id.to_string(), ImageWords { words, token_ids });
                }
                bar.inc(chunk.len() as u64);
            }
            bar.finish_and_clear();
        }
    }
    Ok(out)
}

/// The `n` most relevant entries of each row of a relevance matrix (B, V), most relevant
/// first: distinct entries, at most V of them.
pub fn top_entries(relevance: &Tensor, n: usize) -> Result<Vec<Vec<usize>>> {
    let (order, _) = top_relevant(&relevance.to_dtype(DType::F32)?, n)?;
    Ok(order
        .to_vec2::<u32>()?
        .into_iter()
        .map(|row| row.into_iter().map(|i| i as usize).collect())
        .collect())
}

/// A seed per (run seed, image), so an image gets the same oracle or random words in every
/// episode and every rerun.
fn item_seed(seed: u64, id: &str) -> u64 {
    let h = Sha256::new()
        .chain_update(seed.to_le_bytes())
        .chain_update(id.as_bytes())
        .finalize();
    u64::from_le_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]])
}

/// The GGUF file the checkpoint's codebook was cut from, where this machine has it.
fn source_gguf(codebook: &Codebook) -> Result<Option<std::path::PathBuf>> {
    let source = &codebook.info().source;
    let cache = spae_assets::AssetCache::from_env();
    for name in ["gemma3-270m", "smollm2-135m"] {
        let asset = spae_assets::find(name)?;
        if cache
            .path_of(asset)
            .file_name()
            .is_some_and(|f| f.to_string_lossy() == *source)
        {
            return Ok(Some(cache.fetch(asset)?));
        }
    }
    Ok(Path::new(source)
        .is_file()
        .then(|| Path::new(source).to_path_buf()))
}

/// The LLM's own embedding rows: the checkpoint's codebook may hold projected rows (PCA to a
/// few dims), in which no class-name anchor from the LLM file can be compared. Read once.
struct RawRows {
    /// Every word of the vocabulary under the checkpoint's filter, uncapped.
    words: Codebook,
    /// Each codebook entry's row in `words`, unprojected: (codebook len, LLM dim).
    entries: Tensor,
}

fn raw_rows(codebook: &Codebook) -> Result<Option<std::sync::Arc<RawRows>>> {
    static LOADED: Mutex<Option<(String, std::sync::Arc<RawRows>)>> = Mutex::new(None);
    let key = format!("{}#{}", codebook.info().source, codebook.len());
    if let Ok(guard) = LOADED.lock() {
        if let Some((k, rows)) = guard.as_ref() {
            if *k == key {
                return Ok(Some(rows.clone()));
            }
        }
    }
    let Some(path) = source_gguf(codebook)? else {
        return Ok(None);
    };
    let filter = VocabFilter {
        max_entries: None,
        max_token_id: None,
        include: Vec::new(),
        // A filter read back from a checkpoint names its word list but holds no words.
        dictionary: None,
        ..codebook.info().filter.clone()
    };
    let words = Codebook::from_gguf(&path, &filter, &Device::Cpu)?;
    let by_token: HashMap<u32, u32> = words
        .token_ids()
        .iter()
        .enumerate()
        .map(|(i, &t)| (t, i as u32))
        .collect();
    let idx: Vec<u32> = codebook
        .token_ids()
        .iter()
        .map(|t| {
            by_token
                .get(t)
                .copied()
                .with_context(|| format!("codebook token {t} is not a word of {}", path.display()))
        })
        .collect::<Result<_>>()?;
    let emb = words.embeddings().to_dtype(DType::F32)?;
    let entries = emb.index_select(&Tensor::new(idx, emb.device())?, 0)?;
    let rows = std::sync::Arc::new(RawRows { words, entries });
    if let Ok(mut guard) = LOADED.lock() {
        *guard = Some((key, rows.clone()));
    }
    Ok(Some(rows))
}

/// The row a class name reads as in `table`: each word's own entry where the vocabulary has
/// one, else the pieces of a greedy longest-match split ("sand" + "al") from the LLM file;
/// the mean over the name's words. `None` if nothing is found.
fn class_anchor(table: &Codebook, gguf: Option<&Path>, parts: &[String]) -> Result<Option<Tensor>> {
    let mut rows: Vec<Tensor> = Vec::new();
    let mut missing: Vec<&String> = Vec::new();
    for part in parts {
        match table.index_of_word(part) {
            Some(i) => rows.push(table.embeddings().get(i)?.to_dtype(DType::F32)?),
            None => missing.push(part),
        }
    }
    if let (false, Some(path)) = (missing.is_empty(), gguf) {
        // Every piece, with or without the word marker.
        let pieces = VocabFilter {
            word_start: false,
            ascii_letters_only: false,
            min_len: 1,
            max_token_id: None,
            dedupe_case_insensitive: false,
            max_entries: None,
            include: Vec::new(),
            dictionary: None,
        };
        let all = Codebook::from_gguf(path, &pieces, &Device::Cpu)?;
        let index: HashMap<&str, usize> = all
            .pieces()
            .iter()
            .enumerate()
            .map(|(i, p)| (p.as_str(), i))
            .collect();
        let marker = table.info().marker.as_str();
        for part in missing {
            let word = format!("{marker}{part}");
            let mut rest = word.as_str();
            while !rest.is_empty() {
                let cut = (1..=rest.len())
                    .rev()
                    .filter(|&n| rest.is_char_boundary(n))
                    .find(|&n| index.contains_key(&rest[..n]));
                let Some(n) = cut else { break };
                rows.push(
                    all.embeddings()
                        .get(index[&rest[..n]])?
                        .to_dtype(DType::F32)?,
                );
                rest = &rest[n..];
            }
        }
    }
    if rows.is_empty() {
        return Ok(None);
    }
    Ok(Some(Tensor::stack(&rows, 0)?.mean(0)?))
}

/// `word` as a whole-word token of the LLM the codebook was cut from (its file's vocabulary
/// under the codebook's filter, uncapped, where the file is at hand; else the codebook's
/// own words): the word and its token id, or `None` if the LLM has no such token.
pub fn vocabulary_word(codebook: &Codebook, word: &str) -> Result<Option<(String, u32)>> {
    let table = raw_rows(codebook)?;
    let table = table.as_ref().map_or(codebook, |r| &r.words);
    Ok(table
        .index_of_word(word)
        .map(|i| (table.word(i).to_string(), table.token_ids()[i])))
}

/// (codebook source, codebook size, class name) -> nearest entries.
type NeighbourMemo = Vec<((String, usize, String), Vec<usize>)>;

/// The codebook entries nearest a class name by cosine in the LLM's embedding space (the
/// LLM file's rows, not the checkpoint's projected ones, where the file is at hand), the
/// name's own words excluded (so the oracle hints at the class without spelling it). A name of
/// several words ("golden retriever") is the mean of the words' rows.
pub fn class_neighbours(codebook: &Codebook, class_name: &str) -> Result<Vec<usize>> {
    // A grid of runs asks for the same classes again and again.
    static MEMO: Mutex<NeighbourMemo> = Mutex::new(Vec::new());
    let key = (
        codebook.info().source.clone(),
        codebook.len(),
        class_name.to_string(),
    );
    if let Ok(memo) = MEMO.lock() {
        if let Some((_, v)) = memo.iter().find(|(k, _)| *k == key) {
            return Ok(v.clone());
        }
    }
    let found = nearest_to_class(codebook, class_name)?;
    if let Ok(mut memo) = MEMO.lock() {
        memo.push((key, found.clone()));
    }
    Ok(found)
}

fn nearest_to_class(codebook: &Codebook, class_name: &str) -> Result<Vec<usize>> {
    let parts: Vec<String> = class_name
        .split(|c: char| c.is_whitespace() || c == '-' || c == '_')
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    let raw = raw_rows(codebook)?;
    let (centre, emb) = match &raw {
        Some(r) => {
            let gguf = source_gguf(codebook)?;
            (
                class_anchor(&r.words, gguf.as_deref(), &parts)?,
                r.entries.clone(),
            )
        }
        // Without the LLM file, the codebook's own rows (and only its own words) serve.
        None => (
            class_anchor(codebook, None, &parts)?,
            codebook.embeddings().to_dtype(DType::F32)?,
        ),
    };
    let Some(centre) = centre else {
        bail!(
            "--words oracle: no word or piece of class {class_name:?} is in the LLM vocabulary, \
             so it has no neighbours to draw from"
        );
    };
    let norms = emb.sqr()?.sum(D::Minus1)?.sqrt()?;
    let cos = (emb.matmul(&centre.unsqueeze(1)?)?.squeeze(1)? / norms)?;
    let cos: Vec<f32> = cos.to_vec1()?;
    let mut order: Vec<usize> = (0..cos.len()).collect();
    order.sort_by(|&a, &b| cos[b].total_cmp(&cos[a]));
    Ok(order
        .into_iter()
        .filter(|&i| !parts.contains(&codebook.word(i).to_lowercase()))
        .take(ORACLE_NEIGHBOURS)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_entries_are_the_most_relevant_first_and_distinct() {
        let relevance = Tensor::new(
            &[[0.1f32, 0.9, -0.3, 0.5, 0.7], [0.2, -1.0, 0.8, 0.0, 0.3]],
            &Device::Cpu,
        )
        .unwrap();
        let top = top_entries(&relevance, 3).unwrap();
        assert_eq!(top, vec![vec![1, 4, 3], vec![2, 4, 0]]);
        assert_eq!(top_entries(&relevance, 1).unwrap(), vec![vec![1], vec![2]]);
        // Never more than the codebook holds, each entry once.
        let all = top_entries(&relevance, 9).unwrap();
        assert_eq!(all[0], vec![1, 4, 3, 0, 2]);
        assert_eq!(all[1], vec![2, 4, 0, 3, 1]);
    }
}
