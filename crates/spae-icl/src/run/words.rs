//! What stands for each image in a prompt: SPAE's words, oracle words or random words.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use candle_core::{DType, D};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use spae_core::SpaeModel;

use super::task::Task;
use crate::cli::WordSource;

/// An image's words (layer order) and their LLM token ids, one token per word.
#[derive(Debug, Clone)]
pub struct ImageWords {
    pub words: Vec<String>,
    pub token_ids: Vec<u32>,
}

impl ImageWords {
    pub fn text(&self) -> String {
        self.words.join(" ")
    }
}

/// How many entries nearest a class name the oracle draws from (SPAE.md section 9 used 20).
const ORACLE_NEIGHBOURS: usize = 20;
const BATCH: usize = 64;

/// Words of every image the episodes of `task` name, keyed by image id.
pub fn image_words(
    task: &Task,
    spae: &SpaeModel,
    depth: usize,
    source: WordSource,
    seed: u64,
) -> Result<HashMap<String, ImageWords>> {
    // Each image once, with the label it carries in the episodes (for the oracle).
    let mut wanted: Vec<(&str, &str)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for ep in &task.episodes {
        for shot in ep.support.iter().chain([&ep.query]) {
            if seen.insert(shot.image.as_str()) {
                wanted.push((&shot.image, &shot.label));
            }
        }
    }
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
                let images = task.load(&ids, cfg.in_channels, cfg.image_size)?;
                let pyramids = spae.tokenize(&images, depth)?;
                for ((id, _), p) in chunk.iter().zip(pyramids) {
                    let words = p.words().map(str::to_string).collect();
                    let token_ids = p
                        .layers
                        .iter()
                        .flat_map(|l| l.token_ids.iter().copied())
                        .collect();
                    out.insert(id.to_string(), ImageWords { words, token_ids });
                }
                bar.inc(chunk.len() as u64);
            }
            bar.finish_and_clear();
        }
        WordSource::Oracle => {
            let mut neighbours: HashMap<&str, Vec<usize>> = HashMap::new();
            for (id, label) in &wanted {
                if !neighbours.contains_key(label) {
                    neighbours.insert(label, class_neighbours(spae, label)?);
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
            for (id, _) in &wanted {
                let mut rng = StdRng::seed_from_u64(item_seed(seed, id));
                let (words, token_ids) = (0..n_words)
                    .map(|_| entry(rng.gen_range(0..codebook.len())))
                    .unzip();
                out.insert(id.to_string(), ImageWords { words, token_ids });
            }
        }
    }
    Ok(out)
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

/// The codebook entries nearest a class name by cosine in the LLM's embedding space, the
/// name's own words excluded (so the oracle hints at the class without spelling it). A name of
/// several words ("golden retriever") is the mean of the words' rows.
pub fn class_neighbours(spae: &SpaeModel, class_name: &str) -> Result<Vec<usize>> {
    let codebook = spae.codebook();
    let parts: Vec<String> = class_name
        .split(|c: char| c.is_whitespace() || c == '-' || c == '_')
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    let rows: Vec<usize> = parts
        .iter()
        .filter_map(|w| codebook.index_of_word(w))
        .collect();
    if rows.is_empty() {
        bail!(
            "--words oracle: no word of class {class_name:?} is a codebook entry, so it has no \
             neighbours to draw from"
        );
    }
    let emb = codebook.embeddings().to_dtype(DType::F32)?;
    let idx = candle_core::Tensor::new(
        rows.iter().map(|&r| r as u32).collect::<Vec<_>>(),
        emb.device(),
    )?;
    let centre = emb.index_select(&idx, 0)?.mean(0)?;
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
