//! Captioning concepts no tokenizer or scorer was trained on (the image-to-text task of SPAE,
//! Sec. 4.2, on open vocabulary): captioned emoji of the *train* concepts in context, then the
//! words of an emoji of a *test* concept, and the LLM writes its name. A task file of kind
//! `caption` on `data = "emoji"` (`tasks/emoji-caption.toml`); `eval-vqa --task emoji-caption`
//! runs it.
//!
//! Scored beside chance: open (the greedy caption up to the first period equals the name),
//! constrained (the most likely of the test split's names, and whether the name is among the 5
//! most likely) and, where the task asks for it, calibrated (the same, each name's probability
//! divided by the one a content-free query gives it: Zhao et al. 2021). No test concept is ever
//! a support caption, so the LLM can only name it from the words. The words are the
//! tokenizer's, or for the rows that bound it the oracle's (entries near the name), random
//! entries, or the teacher's (its most relevant entries), as in Table 1.

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use llm_client::Prompt;
use prompt::{CaptionContext, CaptionItem};
use rand::rngs::StdRng;
use rand::seq::index;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use spae_datasets::{all_styles, EmojiSet, EmojiSplit};

use crate::bail;
use crate::error::{Context, Result};
use crate::fewshot::words::{image_words, ImageStore, ImageWords, Teacher};
use crate::fewshot::{Scoring, WordSource};
use crate::reader::Reader;
use crate::store::{open_results, ResultStore};
use crate::task::TaskKind;
use crate::tokenizer::{BuiltIn, CheckpointRef};
use crate::util::{sha256_hex, write_atomic};
use crate::vqa::EvalVqaConfig;

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
    /// The 5 most likely names after calibration, most likely first; only where the task
    /// scores `calibrated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibrated_top5: Option<Vec<String>>,
}

/// Which readings of one image name it: the name compared ignoring case and surrounding
/// space, top-5 as any of the five; the calibrated ones only where the image was scored so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamingHits {
    pub open: bool,
    pub constrained: bool,
    pub constrained_top5: bool,
    pub calibrated: Option<bool>,
    pub calibrated_top5: Option<bool>,
}

impl NamingResult {
    pub fn hits(&self) -> NamingHits {
        let same = |n: &String| n.trim().eq_ignore_ascii_case(self.truth.trim());
        let in_top = |names: &[String], k: usize| names.iter().take(k).any(same);
        NamingHits {
            open: same(&self.open),
            constrained: same(&self.constrained),
            constrained_top5: self.top5.iter().any(same),
            calibrated: self.calibrated_top5.as_deref().map(|c| in_top(c, 1)),
            calibrated_top5: self.calibrated_top5.as_deref().map(|c| in_top(c, 5)),
        }
    }
}

/// Accuracies with their 95% Wilson intervals, in [0, 1].
#[derive(Debug, Clone, Serialize)]
pub struct NamingSummary {
    pub items: usize,
    pub names: usize,
    pub open: (f64, f64, f64),
    pub constrained: (f64, f64, f64),
    pub constrained_top5: (f64, f64, f64),
    /// Calibrated top-1 and top-5, where every row was scored so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibrated: Option<(f64, f64, f64)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibrated_top5: Option<(f64, f64, f64)>,
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

/// The class name of image `i` of `set`.
fn name_of(set: &EmojiSet, i: usize) -> Result<String> {
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
}

/// Splits' images by the ids the `emoji` task gives them (`emoji-<split>/<index>`), so an
/// image draws the same oracle and random words here as in Table 1.
struct EmojiImages<'a> {
    splits: Vec<(String, &'a EmojiSet)>,
}

impl<'a> EmojiImages<'a> {
    fn new(splits: &[(&str, &'a EmojiSet)]) -> Self {
        Self {
            splits: splits
                .iter()
                .map(|(name, set)| (format!("emoji-{name}/"), *set))
                .collect(),
        }
    }

    fn id(split: &str, index: usize) -> String {
        format!("emoji-{split}/{index}")
    }

    /// The split and index `id` names.
    fn find(&self, id: &str) -> Result<(&'a EmojiSet, usize)> {
        self.splits
            .iter()
            .find_map(|(prefix, set)| {
                let i: usize = id.strip_prefix(prefix.as_str())?.parse().ok()?;
                (i < set.images.len()).then_some((*set, i))
            })
            .with_context(|| format!("image {id} is not in the emoji splits read"))
    }
}

impl ImageStore for EmojiImages<'_> {
    fn load(&self, ids: &[&str], channels: usize, size: usize) -> Result<Tensor> {
        let mut parts = Vec::with_capacity(ids.len());
        for id in ids {
            let (set, i) = self.find(id)?;
            parts.push(set.images.batch(&[i], &Device::Cpu)?);
        }
        let t = Tensor::cat(&parts, 0)?;
        let (_, c, h, w) = t.dims4()?;
        if (c, h, w) != (channels, size, size) {
            bail!("emoji images held at {c}x{h}x{w}; asked for {channels}x{size}x{size}");
        }
        Ok(t)
    }
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
    if let Some(s) = cfg.task.scorings.iter().find(|s| {
        !matches!(
            s,
            Scoring::Open | Scoring::Constrained | Scoring::Calibrated
        )
    }) {
        bail!(
            "task {}: scoring {}; emoji captioning scores open, constrained and calibrated",
            cfg.task.name,
            s.flag()
        );
    }
    crate::fewshot::check_teacher(cfg.teacher.as_ref(), cfg.words)?;
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
    let calibrate = cfg.task.scorings.contains(&Scoring::Calibrated);
    let size = r.spae.config().image_size;
    let teacher_side = cfg.teacher.as_ref().map(|t| t.image_size.unwrap_or(size));
    let mut identity = serde_json::json!({
        "task": cfg.task.name, "split": cfg.split, "llm": c.llm.name,
        "checkpoint": r.checkpoint, "checkpoint_sha256": ckpt.sha256()?,
        "template_sha256": sha256_hex(r.templates.source(template)?.as_bytes()),
        "shots": c.shots, "layers": c.layers, "seed": c.seed, "max_tokens": cfg.max_tokens,
    });
    // Tokenizer runs keep the identity their folders have always had.
    if cfg.words != WordSource::Spae {
        identity["words"] = serde_json::json!(cfg.words.name());
    }
    if let Some(t) = &cfg.teacher {
        identity["teacher"] = t.identity(teacher_side)?;
    }
    let mut store: ResultStore<NamingResult> = open_results(
        &out,
        &identity,
        &serde_json::json!({ "limit": cfg.limit }),
        |r: &NamingResult| r.item,
    )?;

    let train = split(EmojiSplit::Train, size)?;
    let test = split(test_split, size)?;
    let images = EmojiImages::new(&[("train", &train), (&cfg.split, &test)]);
    let names: Vec<String> = test.images.class_names.clone();

    let population = test.images.len();
    let limit = cfg.limit.min(population);
    // A seeded order of the whole split, cut at `limit`: a larger limit keeps the items a
    // smaller one drew.
    let mut rng = StdRng::seed_from_u64(c.seed);
    let mut picked = index::sample(&mut rng, population, population).into_vec();
    picked.truncate(limit);
    let is_done = |store: &ResultStore<NamingResult>, item: usize| {
        store
            .get(item)
            .is_some_and(|r| r.index == picked[item] && (!calibrate || r.calibrated_top5.is_some()))
    };
    let todo: Vec<usize> = (0..limit).filter(|&i| !is_done(&store, i)).collect();
    // Each item's support draw depends on its position alone, so a resumed run asks the same
    // prompts.
    let supports: Vec<Vec<usize>> = todo
        .iter()
        .map(|&item| {
            let mut draw = StdRng::seed_from_u64(crate::util::item_seed(c.seed, item));
            index::sample(
                &mut draw,
                train.images.len(),
                c.shots.min(train.images.len()),
            )
            .into_vec()
        })
        .collect();
    // The words of the queries to ask and of the train images their supports draw, each
    // once, with the class names the oracle draws near.
    let mut wanted: Vec<(String, String)> = Vec::new();
    for &item in &todo {
        let i = picked[item];
        wanted.push((EmojiImages::id(&cfg.split, i), name_of(&test, i)?));
    }
    let mut drawn: Vec<usize> = supports.iter().flatten().copied().collect();
    drawn.sort_unstable();
    drawn.dedup();
    for i in drawn {
        wanted.push((EmojiImages::id("train", i), name_of(&train, i)?));
    }
    let wanted: Vec<(&str, &str)> = wanted
        .iter()
        .map(|(i, n)| (i.as_str(), n.as_str()))
        .collect();
    // The teacher reads the same images at its own side.
    let at_side = match teacher_side {
        Some(side) if side != size => {
            Some((split(EmojiSplit::Train, side)?, split(test_split, side)?))
        }
        _ => None,
    };
    let teacher_images = at_side
        .as_ref()
        .map(|(train, test)| EmojiImages::new(&[("train", train), (&cfg.split, test)]));
    let teacher = cfg
        .teacher
        .as_ref()
        .zip(teacher_side)
        .map(|(t, side)| Teacher {
            scorer: &t.scorer,
            data: DATA,
            images: teacher_images.as_ref().unwrap_or(&images),
            channels: r.spae.config().in_channels,
            image_size: side,
        });
    let words = image_words(
        &wanted,
        &images,
        &r.spae,
        depth,
        cfg.words,
        c.seed,
        teacher.as_ref(),
    )?;
    let words_of = |split: &str, i: usize| -> Result<&ImageWords> {
        let id = EmojiImages::id(split, i);
        words
            .get(&id)
            .with_context(|| format!("no words for image {id}"))
    };

    let bar = crate::progress::bar(todo.len() as u64, "images");
    for (&item, support) in todo.iter().zip(&supports) {
        let mut items = Vec::with_capacity(support.len());
        let mut slots: Vec<&ImageWords> = Vec::with_capacity(support.len() + 1);
        for (j, &i) in support.iter().enumerate() {
            items.push(CaptionItem {
                image: prompt::image_slot(j),
                caption: name_of(&train, i)?,
            });
            slots.push(words_of("train", i)?);
        }
        slots.push(words_of(&cfg.split, picked[item])?);
        let mut ctx = CaptionContext {
            support: items,
            query: prompt::image_slot(support.len()),
        };
        let p = r.prompt(template, &ctx, &slots)?;
        let content_free = if calibrate {
            ctx.query = prompt::image_slot(usize::MAX);
            Some(r.prompt(template, &ctx, &slots)?)
        } else {
            None
        };
        let result =
            ask(&r, &p, content_free.as_ref(), &names, cfg.max_tokens).map(|a| NamingResult {
                item,
                index: picked[item],
                truth: name_of(&test, picked[item]).unwrap_or_default(),
                open: a.open,
                constrained: a.top5.first().cloned().unwrap_or_default(),
                top5: a.top5,
                calibrated_top5: a.calibrated_top5,
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

/// What the model said of one image.
struct Answers {
    open: String,
    /// The 5 most likely names, best first.
    top5: Vec<String>,
    /// The same after calibration, where a content-free prompt was given.
    calibrated_top5: Option<Vec<String>>,
}

/// The greedy caption, the 5 names the model finds most likely after the prompt and, with
/// `content_free` (the prompt with a content-free query), the 5 most likely after calibration.
fn ask(
    r: &Reader,
    p: &Prompt,
    content_free: Option<&Prompt>,
    names: &[String],
    max_tokens: usize,
) -> Result<Answers> {
    let open = r.answer_open(p, max_tokens)?;
    let score = |p: &Prompt| r.score_candidates(p, names);
    let scores = score(p)?;
    let calibrated_top5 = match content_free {
        Some(cf) => {
            let calibrated = prompt::calibrate(&scores, &score(cf)?)?;
            Some(top_names(&calibrated, names, 5))
        }
        None => None,
    };
    Ok(Answers {
        open,
        top5: top_names(&scores, names, 5),
        calibrated_top5,
    })
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
    let hits: Vec<NamingHits> = rows.iter().map(|r| r.hits()).collect();
    let rate = |f: fn(&NamingHits) -> bool| {
        prompt::accuracy_with_interval(&hits.iter().map(f).collect::<Vec<_>>())
    };
    // Calibrated rates only where every row was scored so.
    let calibrated = |f: fn(&NamingHits) -> Option<bool>| {
        let right: Option<Vec<bool>> = hits.iter().map(f).collect();
        right
            .filter(|r| !r.is_empty())
            .map(|r| prompt::accuracy_with_interval(&r))
    };
    let n = names.max(1) as f64;
    NamingSummary {
        items: rows.len(),
        names,
        open: rate(|h| h.open),
        constrained: rate(|h| h.constrained),
        constrained_top5: rate(|h| h.constrained_top5),
        calibrated: calibrated(|h| h.calibrated),
        calibrated_top5: calibrated(|h| h.calibrated_top5),
        chance_top1: 1.0 / n,
        chance_top5: (5.0 / n).min(1.0),
    }
}

fn markdown(cfg: &EvalVqaConfig, checkpoint: &str, depth: usize, s: &NamingSummary) -> String {
    let pct = |(a, lo, hi): (f64, f64, f64)| {
        format!("{:.1} [{:.1}, {:.1}]", 100.0 * a, 100.0 * lo, 100.0 * hi)
    };
    let words = match (cfg.words, &cfg.teacher) {
        (WordSource::Spae, _) => "the tokenizer's words".to_string(),
        (WordSource::Oracle, _) => {
            "oracle words (drawn from the codebook entries nearest the image's name)".to_string()
        }
        (WordSource::Random, _) => "random codebook entries".to_string(),
        (WordSource::Teacher, Some(t)) => format!(
            "the teacher's words (each image's most relevant codebook entries under `{}`)",
            t.scorer
        ),
        (WordSource::Teacher, None) => "the teacher's words".to_string(),
    };
    let (cal_head, cal_rule, cal_cells) = match (s.calibrated, s.calibrated_top5) {
        (Some(top1), Some(top5)) => (
            " calibrated | calibrated, top-5 |",
            "---|---|",
            format!(" {} | {} |", pct(top1), pct(top5)),
        ),
        _ => ("", "", String::new()),
    };
    format!(
        "# Captioning unseen emoji concepts in context, {}\n\n\
         {} images of the {} split (drawn with seed {}), each after {} captioned images of the train \
         concepts; {} pyramid layers per image, {words}; checkpoint `{}`.\n\
         Written by `spae-icl eval-vqa {}`.\n\n\
         Accuracy in % with 95% Wilson intervals. Open: the greedy caption up to the first period \
         equals the name. Constrained: the most likely of the split's {} names (top-5: the name is \
         among the 5 most likely). Calibrated: the same, each name's probability divided by the \
         one it gets when the query's words are \"{}\" (Zhao et al. 2021). Chance: one name drawn \
         at random.\n\n\
         | items | open | constrained | constrained, top-5 |{cal_head} chance | chance, top-5 |\n\
         |---|---|---|---|{cal_rule}---|---|\n\
         | {} | {} | {} | {} |{cal_cells} {:.1} | {:.1} |\n",
        cfg.common.llm.name,
        s.items,
        cfg.split,
        cfg.common.seed,
        cfg.common.shots,
        depth,
        checkpoint,
        crate::util::invocation("eval-vqa"),
        s.names,
        crate::fewshot::CONTENT_FREE,
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
            calibrated_top5: None,
        }
    }

    /// A set of `n` 2x2 RGB images, image i filled with the byte `base + i`, named
    /// `{split}-{i}`.
    fn tiny_set(split: &str, n: usize, base: u8) -> EmojiSet {
        EmojiSet {
            images: spae_datasets::LabeledImages {
                name: split.into(),
                channels: 3,
                size: 2,
                pixels: (0..n).flat_map(|i| [base + i as u8; 12]).collect(),
                labels: (0..n as u32).collect(),
                class_names: (0..n).map(|i| format!("{split}-{i}")).collect(),
            },
            styles: Vec::new(),
            concepts: Vec::new(),
        }
    }

    #[test]
    fn emoji_images_are_found_by_the_emoji_task_ids() {
        let (train, test) = (tiny_set("train", 3, 0), tiny_set("test", 2, 100));
        let images = EmojiImages::new(&[("train", &train), ("test", &test)]);
        assert_eq!(EmojiImages::id("test", 1), "emoji-test/1");
        let t = images
            .load(&["emoji-test/1", "emoji-train/2", "emoji-train/0"], 3, 2)
            .unwrap();
        assert_eq!(t.dims(), [3, 3, 2, 2]);
        let first: Vec<f32> = t
            .flatten_from(1)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap()
            .iter()
            .map(|row| row[0])
            .collect();
        // Each image as it is asked for, in order: the bytes the sets hold, scaled to [0, 1]
        // by the same division.
        let want: Vec<f32> = [101u8, 2, 0].iter().map(|&b| b as f32 / 255.0).collect();
        assert_eq!(first, want);
        assert_eq!(name_of(&test, 1).unwrap(), "test-1");
        for (id, said) in [
            ("emoji-val/0", "emoji-val/0"),
            ("emoji-test/2", "emoji-test/2"),
            ("test/0", "test/0"),
        ] {
            let err = images.load(&[id], 3, 2).unwrap_err().to_string();
            assert!(err.contains(said), "{err}");
        }
        let err = images
            .load(&["emoji-train/0"], 3, 4)
            .unwrap_err()
            .to_string();
        assert!(err.contains("3x2x2") && err.contains("3x4x4"), "{err}");
    }

    #[test]
    fn calibrated_names_are_summarised_when_every_row_has_them() {
        let mut rows = [
            row("taco", "taco", &["rocket", "taco"]),
            row("violin", "violin", &["violin", "taco"]),
        ];
        rows[0].calibrated_top5 = Some(vec!["taco".into(), "rocket".into()]);
        rows[1].calibrated_top5 = Some(vec!["rocket".into(), "taco".into()]);
        let s = summarize(&rows.iter().collect::<Vec<_>>(), 4);
        assert_eq!(s.calibrated.map(|a| a.0), Some(0.5));
        assert_eq!(s.calibrated_top5.map(|a| a.0), Some(0.5));
        let cfg = EvalVqaConfig::for_task(crate::task::TaskSpec::resolve("emoji-caption").unwrap());
        let md = markdown(&cfg, "<ckpt>", 2, &s);
        assert!(md.contains("| calibrated | calibrated, top-5 |"), "{md}");
        assert!(
            md.contains("| 50.0 [9.5, 90.5] | 50.0 [9.5, 90.5] | 25.0 |"),
            "{md}"
        );

        // A row written before calibration was asked for: no calibrated column.
        rows[1].calibrated_top5 = None;
        let s = summarize(&rows.iter().collect::<Vec<_>>(), 4);
        assert_eq!((s.calibrated, s.calibrated_top5), (None, None));
        assert!(!markdown(&cfg, "<ckpt>", 2, &s).contains("calibrated |"));
        let line = r#"{"item":0,"index":3,"truth":"taco","open":"taco","constrained":"taco","top5":["taco"]}"#;
        let read: NamingResult = serde_json::from_str(line).unwrap();
        assert_eq!(read.calibrated_top5, None);
        assert!(!serde_json::to_string(&read).unwrap().contains("calibrated"));
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
        // What it cannot score or read is refused before anything loads.
        let mut decoding = emoji.clone();
        decoding.task.scorings.push(Scoring::ConstrainedDecoding);
        let err = eval_naming(&decoding).unwrap_err().to_string();
        assert!(err.contains("constrained-decoding"), "{err}");
        let mut lone = emoji;
        lone.words = WordSource::Teacher;
        let err = eval_naming(&lone).unwrap_err().to_string();
        assert!(err.contains("--teacher SPEC"), "{err}");
    }
}
