//! Captioning concepts no tokenizer or scorer was trained on (the image-to-text task of SPAE,
//! Sec. 4.2, on open vocabulary): captioned emoji of the *train* concepts in context, then the
//! words of an emoji of a *test* concept, and the LLM writes its name. A task file of kind
//! `caption` on `data = "emoji"` (`tasks/emoji-caption.toml`); `eval-vqa --task emoji-caption`
//! runs it.
//!
//! Scored two ways, beside chance: open (the greedy caption up to the first period equals the
//! name) and constrained (the most likely of the test split's names, and whether the name is
//! among the 5 most likely). No test concept is ever a support caption, so the LLM can only
//! name it from the words.

use std::path::PathBuf;

use llm_client::Prompt;
use prompt::{CaptionContext, CaptionItem};
use rand::rngs::StdRng;
use rand::seq::index;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use spae_datasets::{all_styles, EmojiSet, EmojiSplit};

use crate::bail;
use crate::error::{Context, Result};
use crate::fewshot::words::ImageWords;
use crate::reader::Reader;
use crate::store::{open_results, ResultStore};
use crate::task::TaskKind;
use crate::tokenizer::{BuiltIn, CheckpointRef};
use crate::util::{sha256_hex, write_atomic};
use crate::vqa::{words_of, EvalVqaConfig};

/// The data spec of the tasks this module runs.
pub const DATA: &str = "emoji";

/// One test image, named.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamingResult {
    /// Position in the seeded draw.
    pub item: usize,
    /// The image's index in the test split.
    pub index: usize,
    pub truth: String,
    pub open: String,
    pub constrained: String,
    /// The 5 most likely names, most likely first.
    pub top5: Vec<String>,
}

/// Accuracies with their 95% Wilson intervals, in [0, 1].
#[derive(Debug, Clone, Serialize)]
pub struct NamingSummary {
    pub items: usize,
    pub names: usize,
    pub open: (f64, f64, f64),
    pub constrained: (f64, f64, f64),
    pub constrained_top5: (f64, f64, f64),
    pub chance_top1: f64,
    pub chance_top5: f64,
}

/// What [`eval_naming`] returns.
#[derive(Debug, Clone)]
pub struct NamingRun {
    pub out: PathBuf,
    pub summary: NamingSummary,
    pub markdown: String,
    /// Items asked for in this run; the others were read back from the result folder.
    pub asked: usize,
}

/// Whether `cfg` is a task this module runs (captioning on the emoji concepts).
pub fn runs(cfg: &EvalVqaConfig) -> bool {
    cfg.task.data == DATA && cfg.task.kind == TaskKind::Caption
}

/// The tokenizer: `--checkpoint`, else the task's built-in one (the emoji tokenizer).
fn checkpoint(cfg: &EvalVqaConfig) -> CheckpointRef {
    CheckpointRef::new(
        cfg.common.checkpoint.clone(),
        cfg.task.tokenizer.unwrap_or(BuiltIn::Emoji),
    )
}

/// Every image of one split, at `size`, in all four styles.
fn split(split: EmojiSplit, size: usize) -> Result<EmojiSet> {
    let cache = spae_assets::AssetCache::from_env();
    Ok(spae_datasets::emoji(&cache, split, &all_styles(), size)?)
}

/// Runs (or resumes) the captioning of `cfg.limit` test images drawn with the seed.
pub fn eval_naming(cfg: &EvalVqaConfig) -> Result<NamingRun> {
    if !runs(cfg) {
        bail!(
            "task {}: captioning of unseen concepts reads data = \"{DATA}\" with kind = \"caption\"",
            cfg.task.name
        );
    }
    let test_split = match cfg.split.as_str() {
        "test" => EmojiSplit::Test,
        "val" => EmojiSplit::Val,
        other => bail!(
            "task {}: split {other:?}; name test or val concepts (the support captions are the train concepts)",
            cfg.task.name
        ),
    };
    let c = &cfg.common;
    let ckpt = checkpoint(cfg);
    let r = Reader::load(&ckpt, &c.llm, c.prompts.as_deref())?;
    let depth = r.depth(c.layers)?;
    let template = cfg.task.template.as_str();
    let out = match &cfg.out {
        Some(o) => o.clone(),
        None => crate::store::default_out(&[&format!(
            "{}-{}",
            crate::util::slug(&cfg.task.name),
            crate::util::slug(&c.llm.name)
        )]),
    };
    let identity = serde_json::json!({
        "task": cfg.task.name, "split": cfg.split, "llm": c.llm.name,
        "checkpoint": r.checkpoint, "checkpoint_sha256": ckpt.sha256()?,
        "template_sha256": sha256_hex(r.templates.source(template)?.as_bytes()),
        "shots": c.shots, "layers": c.layers, "seed": c.seed, "max_tokens": cfg.max_tokens,
    });
    let mut store: ResultStore<NamingResult> = open_results(
        &out,
        &identity,
        &serde_json::json!({ "limit": cfg.limit }),
        |r: &NamingResult| r.item,
    )?;

    let size = r.spae.config().image_size;
    let train = split(EmojiSplit::Train, size)?;
    let test = split(test_split, size)?;
    let names: Vec<String> = test.images.class_names.clone();
    let name_of = |set: &EmojiSet, i: usize| -> Result<String> {
        let label = *set
            .images
            .labels
            .get(i)
            .with_context(|| format!("no emoji image {i}"))?;
        set.images
            .class_names
            .get(label as usize)
            .cloned()
            .with_context(|| format!("emoji image {i} has no class {label}"))
    };

    let population = test.images.len();
    let limit = cfg.limit.min(population);
    // A seeded order of the whole split, cut at `limit`: a larger limit keeps the items a
    // smaller one drew.
    let mut rng = StdRng::seed_from_u64(c.seed);
    let mut picked = index::sample(&mut rng, population, population).into_vec();
    picked.truncate(limit);
    let is_done = |store: &ResultStore<NamingResult>, item: usize| {
        store.get(item).is_some_and(|r| r.index == picked[item])
    };
    let todo: Vec<usize> = (0..limit).filter(|&i| !is_done(&store, i)).collect();
    let query_words = words_of(
        &r.spae,
        &test.images,
        &todo.iter().map(|&i| picked[i]).collect::<Vec<_>>(),
        depth,
    )?;
    // Every train image's words once: the support draws reuse them.
    let train_words = if todo.is_empty() {
        Vec::new()
    } else {
        let all: Vec<usize> = (0..train.images.len()).collect();
        words_of(&r.spae, &train.images, &all, depth)?
    };
    let bar = crate::progress::bar(todo.len() as u64, "images");
    for (k, &item) in todo.iter().enumerate() {
        // Each item's support draw depends on its position alone, so a resumed run asks the
        // same prompts.
        let mut draw = StdRng::seed_from_u64(crate::util::item_seed(c.seed, item));
        let support = index::sample(
            &mut draw,
            train.images.len(),
            c.shots.min(train.images.len()),
        )
        .into_vec();
        let mut items = Vec::with_capacity(support.len());
        for (j, &i) in support.iter().enumerate() {
            items.push(CaptionItem {
                image: prompt::image_slot(j),
                caption: name_of(&train, i)?,
            });
        }
        let mut slots: Vec<&ImageWords> = support.iter().map(|&i| &train_words[i]).collect();
        slots.push(&query_words[k]);
        let ctx = CaptionContext {
            support: items,
            query: prompt::image_slot(support.len()),
        };
        let p = r.prompt(template, &ctx, &slots)?;
        let result = ask(&r, &p, &names, cfg.max_tokens).map(|(open, top5)| NamingResult {
            item,
            index: picked[item],
            truth: name_of(&test, picked[item]).unwrap_or_default(),
            open,
            constrained: top5.first().cloned().unwrap_or_default(),
            top5,
        });
        let result = result.with_context(|| {
            crate::store::resume_hint(
                item,
                (0..limit).filter(|&i| is_done(&store, i)).count(),
                &out,
            )
        })?;
        store.append(result)?;
        bar.inc(1);
    }
    bar.finish_and_clear();

    let rows: Vec<&NamingResult> = (0..limit).filter_map(|i| store.get(i)).collect();
    let summary = summarize(&rows, names.len());
    let md = markdown(cfg, &r.checkpoint, depth, &summary);
    write_atomic(&out.join("summary.md"), &md)?;
    write_atomic(
        &out.join("summary.json"),
        &serde_json::to_string_pretty(&summary)?,
    )?;
    Ok(NamingRun {
        out,
        summary,
        markdown: md,
        asked: todo.len(),
    })
}

/// The greedy caption, and the 5 names the model finds most likely after the prompt.
fn ask(
    r: &Reader,
    p: &Prompt,
    names: &[String],
    max_tokens: usize,
) -> Result<(String, Vec<String>)> {
    let open = r.answer_open(p, max_tokens)?;
    let spaced: Vec<String> = names.iter().map(|n| format!(" {n}")).collect();
    let scores = r.block_on(r.llm.score(p, &spaced))?;
    if scores.len() != names.len() {
        bail!(
            "{} returned {} scores for {} names",
            r.llm.name(),
            scores.len(),
            names.len()
        );
    }
    Ok((open, top_names(&scores, names, 5)))
}

/// The `k` names of highest score, best first (NaN scores last, ties by position).
fn top_names(scores: &[f32], names: &[String], k: usize) -> Vec<String> {
    let mut order: Vec<usize> = (0..names.len()).collect();
    order.sort_by(|&a, &b| {
        let (x, y) = (scores[a], scores[b]);
        match (x.is_nan(), y.is_nan()) {
            (true, true) => std::cmp::Ordering::Equal,
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            (false, false) => y.total_cmp(&x),
        }
    });
    order
        .into_iter()
        .take(k)
        .map(|i| names[i].clone())
        .collect()
}

/// Accuracies over `rows` (names compared case-insensitively), chance for `names` candidates.
pub fn summarize(rows: &[&NamingResult], names: usize) -> NamingSummary {
    let same = |a: &str, b: &str| a.trim().eq_ignore_ascii_case(b.trim());
    let open: Vec<bool> = rows.iter().map(|r| same(&r.open, &r.truth)).collect();
    let constrained: Vec<bool> = rows
        .iter()
        .map(|r| same(&r.constrained, &r.truth))
        .collect();
    let top5: Vec<bool> = rows
        .iter()
        .map(|r| r.top5.iter().any(|n| same(n, &r.truth)))
        .collect();
    let n = names.max(1) as f64;
    NamingSummary {
        items: rows.len(),
        names,
        open: prompt::accuracy_with_interval(&open),
        constrained: prompt::accuracy_with_interval(&constrained),
        constrained_top5: prompt::accuracy_with_interval(&top5),
        chance_top1: 1.0 / n,
        chance_top5: (5.0 / n).min(1.0),
    }
}

fn markdown(cfg: &EvalVqaConfig, checkpoint: &str, depth: usize, s: &NamingSummary) -> String {
    let pct = |(a, lo, hi): (f64, f64, f64)| {
        format!("{:.1} [{:.1}, {:.1}]", 100.0 * a, 100.0 * lo, 100.0 * hi)
    };
    format!(
        "# Captioning unseen emoji concepts in context, {}\n\n\
         {} images of the {} split (drawn with seed {}), each after {} captioned images of the train \
         concepts; {} pyramid layers per image; checkpoint `{}`.\n\
         Written by `spae-icl eval-vqa {}`.\n\n\
         Accuracy in % with 95% Wilson intervals. Open: the greedy caption up to the first period \
         equals the name. Constrained: the most likely of the split's {} names (top-5: the name is \
         among the 5 most likely). Chance: one name drawn at random.\n\n\
         | items | open | constrained | constrained, top-5 | chance | chance, top-5 |\n\
         |---|---|---|---|---|---|\n\
         | {} | {} | {} | {} | {:.1} | {:.1} |\n",
        cfg.common.llm.name,
        s.items,
        cfg.split,
        cfg.common.seed,
        cfg.common.shots,
        depth,
        checkpoint,
        crate::util::invocation("eval-vqa"),
        s.names,
        s.items,
        pct(s.open),
        pct(s.constrained),
        pct(s.constrained_top5),
        100.0 * s.chance_top1,
        100.0 * s.chance_top5,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(truth: &str, open: &str, top5: &[&str]) -> NamingResult {
        NamingResult {
            item: 0,
            index: 0,
            truth: truth.into(),
            open: open.into(),
            constrained: top5[0].into(),
            top5: top5.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn names_are_ranked_best_first_and_scored_case_blind() {
        let names: Vec<String> = ["dolphin", "taco", "rocket", "violin"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            top_names(&[-3.0, f32::NAN, -1.0, -2.0], &names, 3),
            ["rocket", "violin", "dolphin"]
        );
        let rows = [
            row("Dolphin", "dolphin", &["dolphin", "taco"]),
            row("taco", "a taco", &["rocket", "taco"]),
            row("violin", "violin", &["rocket", "dolphin"]),
            row("rocket", "rocket ship", &["violin", "dolphin"]),
        ];
        let s = summarize(&rows.iter().collect::<Vec<_>>(), 4);
        assert_eq!(
            (s.open.0, s.constrained.0, s.constrained_top5.0),
            (0.5, 0.25, 0.5)
        );
        assert_eq!((s.chance_top1, s.chance_top5), (0.25, 1.0));
    }

    #[test]
    fn the_emoji_caption_task_is_run_here_and_easy_vqa_is_not() {
        let emoji =
            EvalVqaConfig::for_task(crate::task::TaskSpec::resolve("emoji-caption").unwrap());
        assert!(runs(&emoji));
        assert_eq!(checkpoint(&emoji).builtin, BuiltIn::Emoji);
        let easy = EvalVqaConfig::builtin(crate::vqa::VqaTask::Caption).unwrap();
        assert!(!runs(&easy));
        assert!(eval_naming(&easy).is_err());
    }
}
