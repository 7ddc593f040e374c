//! `spae-icl caption`, `spae-icl vqa` and `spae-icl eval-vqa`: a frozen LLM describes an image
//! and answers questions about it from in-context examples alone (SPAE.md section 6). The
//! support items are easy-VQA training images in SPAE words, each with its caption ("a red
//! circle", from the shape and colour its questions name) or with one of its questions and
//! the answer; the query image's words and its question come last.
//!
//! Support questions are drawn from the query question's *form* (the question with its colour
//! and shape words masked, "what color is the X?"), the way lm-evaluation-harness draws
//! few-shot examples from the task being asked **(ours)**: the model learns from the examples
//! which kind of answer is wanted, and must read the image words for which one.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Device;
use llm_client::{GenerateParams, Prompt};
use prompt::{CaptionContext, CaptionItem, VqaContext, VqaItem};
use rand::rngs::StdRng;
use rand::seq::index;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use spae_core::SpaeModel;
use spae_datasets::{EasyVqa, Split, EASY_VQA_COLOURS, EASY_VQA_SHAPES};

use crate::cli::{CaptionArgs, EvalVqaArgs, VqaArgs, VqaTask};
use crate::generate::{words_up_to, Generator};
use crate::run::assemble;
use crate::run::words::ImageWords;

const VQA_TEMPLATE: &str = "vqa";
const CAPTION_TEMPLATE: &str = "captioning";
/// Tokens of an open-ended answer or caption ("a yellow rectangle" is a few tokens).
const MAX_ANSWER_TOKENS: usize = 8;

/// A question with its colour and shape words masked: "what color is the X?".
pub fn question_form(question: &str) -> String {
    question
        .split(' ')
        .map(|w| {
            let bare = w.trim_end_matches('?');
            if EASY_VQA_COLOURS.contains(&bare) || EASY_VQA_SHAPES.contains(&bare) {
                w.replacen(bare, "X", 1)
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What kind of answer a question wants, for per-kind accuracy.
pub fn answer_kind(answer: &str) -> &'static str {
    if EASY_VQA_COLOURS.contains(&answer) {
        "colour"
    } else if EASY_VQA_SHAPES.contains(&answer) {
        "shape"
    } else {
        "yes/no"
    }
}

/// easy-VQA's training split in SPAE words: the support pool of every prompt.
pub struct SupportPool {
    pub train: EasyVqa,
    pub words: Vec<ImageWords>,
    /// Training questions by form.
    by_form: HashMap<String, Vec<usize>>,
    /// The most frequent training answer per question (the blind baseline: it sees the
    /// question, not the image), and over all questions, and the most frequent caption.
    majority_by_question: HashMap<String, String>,
    pub majority_answer: String,
    pub majority_caption: String,
}

impl SupportPool {
    pub fn new(spae: &SpaeModel, depth: usize) -> Result<Self> {
        let cache = spae_assets::AssetCache::from_env();
        let mut train = spae_datasets::easy_vqa(&cache, Split::Train)?;
        train.images = train.images.resized(spae.config().image_size);
        let words = words_of(
            spae,
            &train,
            &(0..train.images.len()).collect::<Vec<_>>(),
            depth,
        )?;
        let mut by_form: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, q) in train.questions.iter().enumerate() {
            by_form
                .entry(question_form(&q.question))
                .or_default()
                .push(i);
        }
        let most_common = |it: &mut dyn Iterator<Item = &str>| -> String {
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for a in it {
                *counts.entry(a).or_default() += 1;
            }
            counts
                .into_iter()
                .max_by_key(|&(a, n)| (n, std::cmp::Reverse(a)))
                .map(|(a, _)| a.to_string())
                .unwrap_or_default()
        };
        let mut by_question: HashMap<&str, Vec<&str>> = HashMap::new();
        for q in &train.questions {
            by_question
                .entry(q.question.as_str())
                .or_default()
                .push(q.answer.as_str());
        }
        let majority_by_question = by_question
            .into_iter()
            .map(|(q, answers)| (q.to_string(), most_common(&mut answers.into_iter())))
            .collect();
        let majority_answer = most_common(&mut train.questions.iter().map(|q| q.answer.as_str()));
        let captions: Vec<String> = (0..train.images.len()).map(|i| train.caption(i)).collect();
        let majority_caption = most_common(&mut captions.iter().map(String::as_str));
        Ok(Self {
            train,
            words,
            by_form,
            majority_by_question,
            majority_answer,
            majority_caption,
        })
    }

    /// `shots` training questions of `question`'s form (any form when it has none), drawn
    /// with `rng`.
    pub fn questions_like(&self, question: &str, shots: usize, rng: &mut StdRng) -> Vec<usize> {
        let all: Vec<usize>;
        let pool = match self.by_form.get(&question_form(question)) {
            Some(p) => p,
            None => {
                all = (0..self.train.questions.len()).collect();
                &all
            }
        };
        index::sample(rng, pool.len(), shots.min(pool.len()))
            .into_iter()
            .map(|k| pool[k])
            .collect()
    }

    /// `shots` training images (at most all of them) to caption in context, drawn with `rng`.
    pub fn captioned(&self, shots: usize, rng: &mut StdRng) -> Vec<usize> {
        let n = self.train.images.len();
        index::sample(rng, n, shots.min(n)).into_vec()
    }

    /// The blind baseline's answer: the most frequent training answer to the same question
    /// (every test question's text occurs in training; else the overall majority).
    pub fn blind_answer(&self, question: &str) -> &str {
        self.majority_by_question
            .get(question)
            .unwrap_or(&self.majority_answer)
    }

    /// The VQA prompt: `support` training questions, then the query's words and question.
    pub fn vqa_prompt(
        &self,
        g: &Generator,
        support: &[usize],
        query: &ImageWords,
        question: &str,
    ) -> Result<Prompt> {
        let ctx = VqaContext {
            support: support
                .iter()
                .enumerate()
                .map(|(k, &qi)| VqaItem {
                    image: prompt::image_slot(k),
                    question: self.train.questions[qi].question.clone(),
                    answer: self.train.questions[qi].answer.clone(),
                })
                .collect(),
            query: prompt::image_slot(support.len()),
            question: question.to_string(),
        };
        let mut slots: Vec<&ImageWords> = support
            .iter()
            .map(|&qi| &self.words[self.train.questions[qi].image])
            .collect();
        slots.push(query);
        let rendered = g.templates().render(VQA_TEMPLATE, &ctx)?;
        assemble(&rendered, &slots, g.form(), g.llm())
    }

    /// The captioning prompt: `support` captioned training images, then the query's words.
    pub fn caption_prompt(
        &self,
        g: &Generator,
        support: &[usize],
        query: &ImageWords,
    ) -> Result<Prompt> {
        let ctx = CaptionContext {
            support: support
                .iter()
                .enumerate()
                .map(|(k, &i)| CaptionItem {
                    image: prompt::image_slot(k),
                    caption: self.train.caption(i),
                })
                .collect(),
            query: prompt::image_slot(support.len()),
        };
        let mut slots: Vec<&ImageWords> = support.iter().map(|&i| &self.words[i]).collect();
        slots.push(query);
        let rendered = g.templates().render(CAPTION_TEMPLATE, &ctx)?;
        assemble(&rendered, &slots, g.form(), g.llm())
    }
}

/// The words of `images` of `data`, `depth` layers each, in batches.
fn words_of(
    spae: &SpaeModel,
    data: &EasyVqa,
    images: &[usize],
    depth: usize,
) -> Result<Vec<ImageWords>> {
    let mut out = Vec::with_capacity(images.len());
    for chunk in images.chunks(256) {
        let x = data.images.batch(chunk, &Device::Cpu)?;
        for p in spae.tokenize(&x, depth)? {
            out.push(words_up_to(&p, depth));
        }
    }
    Ok(out)
}

/// The tokenizer must read colour: easy-VQA's images are RGB (resized to the checkpoint's
/// side).
fn check_checkpoint(g: &Generator) -> Result<()> {
    let cfg = g.spae.config();
    if cfg.in_channels != 3 {
        bail!(
            "checkpoint {} reads gray images ({} channel); captioning and VQA ask about the \
             colours of easy-VQA's RGB images: pass an RGB easy-VQA checkpoint (the built-in one \
             is used when --checkpoint is not given)",
            g.checkpoint,
            cfg.in_channels
        );
    }
    Ok(())
}

fn depth_arg(g: &Generator, layers: usize) -> Result<usize> {
    g.spae
        .config()
        .pyramid
        .check_depth(layers)
        .with_context(|| format!("--layers {layers}"))?;
    Ok(layers)
}

/// A greedy answer: the text before the first period or newline.
fn answer_open(g: &Generator, prompt: &Prompt) -> Result<String> {
    let params = GenerateParams {
        max_tokens: MAX_ANSWER_TOKENS,
        stop: vec!["\n".into(), ".".into()],
        ..GenerateParams::default()
    };
    let c = g.block_on(g.llm().generate(prompt, &params))?;
    Ok(prompt::parse_answer(&c.text))
}

/// The candidate the model finds most likely after the prompt (each follows a space).
fn answer_constrained(g: &Generator, prompt: &Prompt, candidates: &[String]) -> Result<usize> {
    let spaced: Vec<String> = candidates.iter().map(|c| format!(" {c}")).collect();
    let scores = g.block_on(g.llm().score(prompt, &spaced))?;
    Ok(prompt::constrained_choice(&scores)?)
}

fn query_words(g: &Generator, path: &Path, depth: usize) -> Result<ImageWords> {
    let cfg = g.spae.config();
    let x = spae_core::imageio::load_image(path, cfg.in_channels, cfg.image_size)?;
    let p = g.spae.tokenize(&x.unsqueeze(0)?, depth)?;
    Ok(words_up_to(&p[0], depth))
}

fn generator(a: &crate::cli::VqaCommon) -> Result<Generator> {
    // Answers are text, so decoding is never constrained to codebook tokens.
    Generator::new_with_default(
        &a.ckpt(),
        crate::tokens::BuiltIn::EasyVqa,
        &a.llm,
        &a.api,
        a.prompts.as_deref(),
        0.0,
        true,
    )
}

/// `spae-icl caption IMAGE...`: one caption per image.
pub fn caption(args: CaptionArgs) -> Result<()> {
    let g = generator(&args.common)?;
    check_checkpoint(&g)?;
    let depth = depth_arg(&g, args.common.layers)?;
    let pool = SupportPool::new(&g.spae, depth)?;
    let mut rng = StdRng::seed_from_u64(args.common.seed);
    for path in &args.images {
        let q = query_words(&g, path, depth)?;
        let support = pool.captioned(args.common.shots, &mut rng);
        let p = pool.caption_prompt(&g, &support, &q)?;
        println!("{}\t{}", path.display(), answer_open(&g, &p)?);
    }
    Ok(())
}

/// `spae-icl vqa IMAGE --question ...`: the model's answer.
pub fn vqa(args: VqaArgs) -> Result<()> {
    let g = generator(&args.common)?;
    check_checkpoint(&g)?;
    let depth = depth_arg(&g, args.common.layers)?;
    let pool = SupportPool::new(&g.spae, depth)?;
    let mut rng = StdRng::seed_from_u64(args.common.seed);
    let q = query_words(&g, &args.image, depth)?;
    let question = args.question.trim().to_lowercase();
    let support = pool.questions_like(&question, args.common.shots, &mut rng);
    let p = pool.vqa_prompt(&g, &support, &q, &question)?;
    let answer = if args.open {
        answer_open(&g, &p)?
    } else {
        let answers = &pool.train.answers;
        answers[answer_constrained(&g, &p, answers)?].clone()
    };
    println!("{answer}");
    Ok(())
}

/// One evaluated test item.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ItemResult {
    item: usize,
    /// Index of the test question (VQA) or image (captioning).
    index: usize,
    question: String,
    truth: String,
    kind: String,
    open: String,
    open_correct: bool,
    constrained: String,
    constrained_correct: bool,
    blind: String,
    blind_correct: bool,
    majority_correct: bool,
}

/// `spae-icl eval-vqa`: answer accuracy over easy-VQA's test split beside the majority-answer
/// and blind (question-only) baselines; JSONL per item, resumable.
pub fn eval_vqa(args: EvalVqaArgs) -> Result<()> {
    let g = generator(&args.common)?;
    check_checkpoint(&g)?;
    let depth = depth_arg(&g, args.common.layers)?;
    let task = args.task;
    let template = match task {
        VqaTask::Vqa => VQA_TEMPLATE,
        VqaTask::Caption => CAPTION_TEMPLATE,
    };
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("eval/results").join(format!(
            "{}-easy-vqa-{}",
            task.name(),
            crate::run::slug(&args.common.llm)
        ))
    });
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let identity = serde_json::json!({
        "task": task.name(), "llm": args.common.llm, "checkpoint": g.checkpoint,
        "checkpoint_sha256": crate::tokens::checkpoint_sha256_or(&args.common.ckpt(), crate::tokens::BuiltIn::EasyVqa)?,
        "template_sha256": crate::run::sha256_hex(g.templates().source(template)?.as_bytes()),
        "shots": args.common.shots, "layers": depth, "seed": args.common.seed,
    });
    crate::run::results::check_identity(
        &out,
        &identity,
        &serde_json::json!({"limit": args.limit}),
    )?;

    let pool = SupportPool::new(&g.spae, depth)?;
    let cache = spae_assets::AssetCache::from_env();
    let mut test = spae_datasets::easy_vqa(&cache, Split::Test)?;
    test.images = test.images.resized(g.spae.config().image_size);
    let population = match task {
        VqaTask::Vqa => test.questions.len(),
        VqaTask::Caption => test.images.len(),
    };
    let limit = args.limit.min(population);
    let mut rng = StdRng::seed_from_u64(args.common.seed);
    let picked = index::sample(&mut rng, population, limit).into_vec();

    let results_path = out.join("results.jsonl");
    let (mut done, mut file) =
        crate::run::results::resume_jsonl(&results_path, |r: &ItemResult| r.item)?;
    let todo: Vec<usize> = (0..limit).filter(|i| !done.contains_key(i)).collect();
    let test_images: Vec<usize> = todo
        .iter()
        .map(|&item| match task {
            VqaTask::Vqa => test.questions[picked[item]].image,
            VqaTask::Caption => picked[item],
        })
        .collect();
    let test_words = words_of(&g.spae, &test, &test_images, depth)?;
    let captions: Vec<String> = {
        let mut c: Vec<String> = EASY_VQA_COLOURS
            .iter()
            .flat_map(|c| EASY_VQA_SHAPES.iter().map(move |s| format!("a {c} {s}")))
            .collect();
        c.sort();
        c
    };
    let bar = crate::progress::bar(todo.len() as u64, "items");
    for (k, &item) in todo.iter().enumerate() {
        let idx = picked[item];
        // Each item draws its support from (seed, item): a resumed run sees the same prompts.
        let mut irng = StdRng::seed_from_u64(args.common.seed ^ (0x9E37_79B9 * (item as u64 + 1)));
        let r = match task {
            VqaTask::Vqa => {
                let q = &test.questions[idx];
                let support = pool.questions_like(&q.question, args.common.shots, &mut irng);
                let p = pool.vqa_prompt(&g, &support, &test_words[k], &q.question)?;
                let open = answer_open(&g, &p)?;
                let answers = &pool.train.answers;
                let constrained = answers[answer_constrained(&g, &p, answers)?].clone();
                let blind = pool.blind_answer(&q.question).to_string();
                ItemResult {
                    item,
                    index: idx,
                    question: q.question.clone(),
                    kind: answer_kind(&q.answer).to_string(),
                    open_correct: open == q.answer,
                    open,
                    constrained_correct: constrained == q.answer,
                    constrained,
                    blind_correct: blind == q.answer,
                    blind,
                    majority_correct: pool.majority_answer == q.answer,
                    truth: q.answer.clone(),
                }
            }
            VqaTask::Caption => {
                let truth = test.caption(idx);
                let support = pool.captioned(args.common.shots, &mut irng);
                let p = pool.caption_prompt(&g, &support, &test_words[k])?;
                let open = answer_open(&g, &p)?;
                let constrained = captions[answer_constrained(&g, &p, &captions)?].clone();
                ItemResult {
                    item,
                    index: idx,
                    question: String::new(),
                    kind: "caption".into(),
                    open_correct: open == truth,
                    open,
                    constrained_correct: constrained == truth,
                    constrained,
                    blind_correct: pool.majority_caption == truth,
                    blind: pool.majority_caption.clone(),
                    majority_correct: pool.majority_caption == truth,
                    truth,
                }
            }
        };
        writeln!(file, "{}", serde_json::to_string(&r)?)
            .and_then(|_| file.flush())
            .with_context(|| format!("appending to {}", results_path.display()))?;
        done.insert(item, r);
        bar.inc(1);
    }
    bar.finish_and_clear();

    let rows: Vec<&ItemResult> = done.values().filter(|r| r.item < limit).collect();
    let summary = summarize(&rows);
    let md = markdown(task, &args, &g.checkpoint, depth, &pool, &summary);
    crate::run::results::write_atomic(&out.join("summary.md"), &md)?;
    crate::run::results::write_atomic(
        &out.join("summary.json"),
        &serde_json::to_string_pretty(&summary)?,
    )?;
    println!("{md}");
    Ok(())
}

/// Accuracy (with its 95% interval) of each answerer, over all items and per answer kind;
/// for captions also how often the colour and the shape alone are right.
#[derive(Debug, Serialize)]
struct Summary {
    kinds: Vec<KindRow>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    caption_parts: Vec<PartRow>,
}

#[derive(Debug, Serialize)]
struct PartRow {
    answerer: String,
    colour: (f64, f64, f64),
    shape: (f64, f64, f64),
}

/// What one answerer said for an item.
type Said = fn(&ItemResult) -> &str;

/// Word `k` of "a <colour> <shape>".
fn caption_word(caption: &str, k: usize) -> &str {
    caption.split(' ').nth(k).unwrap_or("")
}

#[derive(Debug, Serialize)]
struct KindRow {
    kind: String,
    items: usize,
    /// (accuracy, low, high) per answerer.
    open: (f64, f64, f64),
    constrained: (f64, f64, f64),
    blind: (f64, f64, f64),
    majority: (f64, f64, f64),
}

fn summarize(rows: &[&ItemResult]) -> Summary {
    let mut kinds: Vec<String> = rows.iter().map(|r| r.kind.clone()).collect();
    kinds.sort();
    kinds.dedup();
    let row = |kind: &str, of: Vec<&&ItemResult>| KindRow {
        kind: kind.to_string(),
        items: of.len(),
        open: prompt::accuracy_with_interval(
            &of.iter().map(|r| r.open_correct).collect::<Vec<_>>(),
        ),
        constrained: prompt::accuracy_with_interval(
            &of.iter().map(|r| r.constrained_correct).collect::<Vec<_>>(),
        ),
        blind: prompt::accuracy_with_interval(
            &of.iter().map(|r| r.blind_correct).collect::<Vec<_>>(),
        ),
        majority: prompt::accuracy_with_interval(
            &of.iter().map(|r| r.majority_correct).collect::<Vec<_>>(),
        ),
    };
    let mut out = vec![row("all", rows.iter().collect())];
    if kinds.len() > 1 {
        for k in &kinds {
            out.push(row(k, rows.iter().filter(|r| &r.kind == k).collect()));
        }
    }
    let mut caption_parts = Vec::new();
    if kinds == ["caption"] {
        let answerers: [(&str, Said); 3] = [
            ("open", |r| &r.open),
            ("constrained", |r| &r.constrained),
            ("majority", |r| &r.blind),
        ];
        for (name, said) in answerers {
            let part = |k: usize| {
                let right: Vec<bool> = rows
                    .iter()
                    .map(|r| caption_word(said(r), k) == caption_word(&r.truth, k))
                    .collect();
                prompt::accuracy_with_interval(&right)
            };
            caption_parts.push(PartRow {
                answerer: name.to_string(),
                colour: part(1),
                shape: part(2),
            });
        }
    }
    Summary {
        kinds: out,
        caption_parts,
    }
}

fn markdown(
    task: VqaTask,
    args: &EvalVqaArgs,
    checkpoint: &str,
    depth: usize,
    pool: &SupportPool,
    s: &Summary,
) -> String {
    let pct = |a: (f64, f64, f64)| {
        format!(
            "{:.1} [{:.1}, {:.1}]",
            100.0 * a.0,
            100.0 * a.1,
            100.0 * a.2
        )
    };
    let (what, blind) = match task {
        VqaTask::Vqa => (
            "questions of the test split",
            "Blind: the most frequent training answer to the same question (it reads the question, not the image)",
        ),
        VqaTask::Caption => (
            "images of the test split",
            "Blind: the most frequent training caption (the same as the majority)",
        ),
    };
    let mut md = format!(
        "# {title} on easy-VQA, {llm}\n\n\
         {n} {what} (drawn with seed {seed}); {shots} support items per prompt{support}, \
         {depth} pyramid layers per image ({words} words); checkpoint `{checkpoint}`.\n\
         Written by `spae-icl eval-vqa {argv}`.\n\n\
         Accuracy in % with 95% Wilson intervals. Open: the greedy continuation up to the first \
         period, exact match. Constrained: the most likely of {cands}. Majority: always \
         \"{majority}\". {blind}.\n\n\
         | answers | items | open | constrained | blind | majority |\n|---|---|---|---|---|---|\n",
        title = match task {
            VqaTask::Vqa => "Visual question answering in context",
            VqaTask::Caption => "Captioning in context",
        },
        llm = args.common.llm,
        n = s.kinds.first().map_or(0, |k| k.items),
        seed = args.common.seed,
        shots = args.common.shots,
        support = match task {
            VqaTask::Vqa => " (training questions of the query's form)",
            VqaTask::Caption => " (random captioned training images)",
        },
        words = pool.words.first().map_or(0, |w| w.words.len()),
        argv = crate::run::invocation("eval-vqa"),
        cands = match task {
            VqaTask::Vqa => "the 13 answers",
            VqaTask::Caption => "the 24 captions \"a <colour> <shape>\"",
        },
        majority = match task {
            VqaTask::Vqa => &pool.majority_answer,
            VqaTask::Caption => &pool.majority_caption,
        },
    );
    for k in &s.kinds {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            k.kind,
            k.items,
            pct(k.open),
            pct(k.constrained),
            pct(k.blind),
            pct(k.majority)
        ));
    }
    if !s.caption_parts.is_empty() {
        md.push_str(
            "\nThe colour and the shape alone (chance: 12.5% and 33.3%):\n\n\
             | answerer | colour right | shape right |\n|---|---|---|\n",
        );
        for p in &s.caption_parts {
            md.push_str(&format!(
                "| {} | {} | {} |\n",
                p.answerer,
                pct(p.colour),
                pct(p.shape)
            ));
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_mask_colours_and_shapes() {
        assert_eq!(
            question_form("what color is the circle?"),
            "what color is the X?"
        );
        assert_eq!(
            question_form("is there not a red shape in the image?"),
            "is there not a X shape in the image?"
        );
        assert_eq!(
            question_form("what shape is present?"),
            "what shape is present?"
        );
        assert_eq!(answer_kind("teal"), "colour");
        assert_eq!(answer_kind("triangle"), "shape");
        assert_eq!(answer_kind("no"), "yes/no");
    }
}
