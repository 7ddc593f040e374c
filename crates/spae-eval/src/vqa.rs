//! Captioning and visual question answering in context, the image-to-text tasks of SPAE
//! (Yu et al., NeurIPS 2023, Sec. 4.2): a frozen LLM describes an image, or answers a question
//! about it, from in-context examples alone. The support items are easy-VQA training images in
//! SPAE words, each with its caption ("a red circle", from the shape and colour its questions
//! name) or with one of its questions and the answer; the query image's words (and its
//! question) come last.
//!
//! Support questions are drawn from those asking the query's question, or sharing its *form*
//! (the question with its colour and shape words masked, "what color is the X?"), the way
//! lm-evaluation-harness draws few-shot examples from the task being asked **(ours)**: the
//! model learns from the examples which kind of answer is wanted, and must read the image words
//! for which one ([`SupportDraw`]; the built-in VQA task draws by question).
//!
//! [`eval_vqa`] measures either task over easy-VQA's test split beside a majority-answer and a
//! blind (question-only) baseline; the task is a task file of kind `vqa` or `caption`
//! (`tasks/easy-vqa-vqa.toml`, `tasks/easy-vqa-caption.toml`), and its results go into one
//! result folder ([`crate::store`]) item by item, so a rerun asks only for what is missing.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::Device;
use llm_client::{GenerateParams, LanguageModel, Prompt};
use prompt::{CaptionContext, CaptionItem, VqaContext, VqaItem};
use rand::rngs::StdRng;
use rand::seq::index;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use spae_core::SpaeModel;
use spae_datasets::{EasyVqa, Split, EASY_VQA_COLOURS, EASY_VQA_SHAPES};

use crate::bail;
use crate::error::{Context, EvalError, Result};
use crate::fewshot::words::ImageWords;
use crate::fewshot::{Scoring, TeacherConfig, WordSource};
use crate::llm::LlmConfig;
use crate::reader::Reader;
use crate::store::{open_results, ResultStore};
use crate::task::{TaskKind, TaskSpec};
use crate::tokenizer::{BuiltIn, CheckpointRef};
use crate::util::{sha256_hex, slug, write_atomic};

/// The built-in template of visual question answering.
pub const VQA_TEMPLATE: &str = "vqa";
/// The built-in template of captioning.
pub const CAPTION_TEMPLATE: &str = "captioning";
/// Tokens of an open-ended answer or caption ("a yellow rectangle" is a few tokens).
pub const MAX_ANSWER_TOKENS: usize = 8;
/// The only data the tasks read: easy-VQA (its training split is the support pool).
const DATA: &str = "easy-vqa";
/// Images tokenized at once.
const BATCH: usize = 256;

/// What `eval-vqa` evaluates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VqaTask {
    /// Questions with one-word answers.
    Vqa,
    /// Captions "a <colour> <shape>".
    Caption,
}

impl VqaTask {
    pub const ALL: [VqaTask; 2] = [VqaTask::Vqa, VqaTask::Caption];

    /// The name in result folders and `run.json` (`vqa`, `caption`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Vqa => "vqa",
            Self::Caption => "caption",
        }
    }

    /// The built-in task file of this task.
    pub fn task_name(self) -> &'static str {
        match self {
            Self::Vqa => "easy-vqa-vqa",
            Self::Caption => "easy-vqa-caption",
        }
    }

    /// The template the built-in task renders.
    pub fn builtin_template(self) -> &'static str {
        match self {
            Self::Vqa => VQA_TEMPLATE,
            Self::Caption => CAPTION_TEMPLATE,
        }
    }

    /// The task a task file of `kind` asks for (`None` for classification).
    pub fn of_kind(kind: TaskKind) -> Option<Self> {
        match kind {
            TaskKind::Vqa => Some(Self::Vqa),
            TaskKind::Caption => Some(Self::Caption),
            TaskKind::Classification => None,
        }
    }

    /// The built-in task file, parsed.
    pub fn spec(self) -> Result<TaskSpec> {
        TaskSpec::resolve(self.task_name())
    }
}

/// Which training questions a VQA prompt's support items are drawn from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SupportDraw {
    /// Questions of the query's form (colour and shape words masked): the examples say which
    /// kind of answer is wanted, and the image words must say which one.
    #[default]
    Form,
    /// The query's own question (its form where training asks it fewer than `shots` times):
    /// the examples also carry that question's answer prior, which the blind baseline reads
    /// from all of training, so what the words add is measured against the same prior.
    Question,
}

impl SupportDraw {
    pub const ALL: [SupportDraw; 2] = [SupportDraw::Form, SupportDraw::Question];

    pub fn name(self) -> &'static str {
        match self {
            Self::Form => "form",
            Self::Question => "question",
        }
    }

    /// How the report names the support set.
    fn describe(self) -> &'static str {
        match self {
            Self::Form => " (training questions of the query's form)",
            Self::Question => {
                " (training questions asking the query's question, of its form where there are too few)"
            }
        }
    }
}

/// What `caption`, `vqa` and `eval-vqa` share: the tokenizer, the LLM, the support set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VqaCommonConfig {
    /// A tokenizer checkpoint for RGB images; `None`: the built-in easy-VQA one.
    pub checkpoint: Option<PathBuf>,
    pub llm: LlmConfig,
    /// Support items (easy-VQA training images or questions) per prompt. Default 16.
    pub shots: usize,
    /// Pyramid layers of every image (2: 5 words, 3: 21 words). Default 2.
    pub layers: usize,
    /// Seed of the support draw (and of the test items' draw in [`eval_vqa`]). Default 0.
    pub seed: u64,
    /// Which training questions a VQA prompt's support items come from. Default: the form.
    pub support: SupportDraw,
    /// A folder of templates that replace the built-in ones of the same name.
    pub prompts: Option<PathBuf>,
}

impl Default for VqaCommonConfig {
    fn default() -> Self {
        Self {
            checkpoint: None,
            llm: LlmConfig::default(),
            shots: 16,
            layers: 2,
            seed: 0,
            support: SupportDraw::Form,
            prompts: None,
        }
    }
}

impl VqaCommonConfig {
    /// The checkpoint, the built-in easy-VQA tokenizer when none is named.
    pub fn checkpoint_ref(&self) -> CheckpointRef {
        CheckpointRef::new(self.checkpoint.clone(), BuiltIn::EasyVqa)
    }
}

/// One `eval-vqa` run: a task file of kind `vqa` or `caption`, and its settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalVqaConfig {
    /// The task: its template, and the defaults the other fields start from.
    pub task: TaskSpec,
    pub common: VqaCommonConfig,
    /// The split the test items come from (the task's `split`; the built-in tasks: test).
    pub split: String,
    /// Test items (questions, or images for captioning), drawn with the seed (the task's
    /// `defaults.episodes`; the built-in tasks: 300).
    pub limit: usize,
    /// Most tokens of an open-ended answer (the task's `defaults.max_tokens`: 8).
    pub max_tokens: usize,
    /// Default: [`EvalVqaConfig::default_out`].
    pub out: Option<PathBuf>,
    /// The words every image reads as: the tokenizer's (SPAE), the oracle's (the image's true
    /// colour and shape as LLM tokens, "red circle": the ceiling this LLM and prompt allow), or
    /// random codebook entries (words that carry nothing).
    #[serde(default = "spae_words")]
    pub words: WordSource,
    /// The teacher of `--words teacher` (emoji captioning only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher: Option<TeacherConfig>,
}

fn spae_words() -> WordSource {
    WordSource::Spae
}

impl EvalVqaConfig {
    /// `task` with its own defaults (shots, layers, items, split), the built-in easy-VQA
    /// tokenizer, the default local LLM and seed 0.
    pub fn for_task(task: TaskSpec) -> Self {
        let d = task.defaults.clone();
        Self {
            split: task.split.clone(),
            common: VqaCommonConfig {
                shots: d.shots,
                layers: d.layers,
                support: task.support_questions,
                ..VqaCommonConfig::default()
            },
            limit: d.episodes,
            max_tokens: d.max_tokens,
            out: None,
            words: WordSource::Spae,
            teacher: None,
            task,
        }
    }

    /// The built-in task file of `task`, with its defaults.
    pub fn builtin(task: VqaTask) -> Result<Self> {
        Ok(Self::for_task(task.spec()?))
    }

    /// Which of the two tasks the task file asks for; refuses what this module cannot run.
    pub fn vqa_task(&self) -> Result<VqaTask> {
        let spec = &self.task;
        let Some(task) = VqaTask::of_kind(spec.kind) else {
            bail!(
                "task {}: kind {:?} is not captioning or VQA; eval-vqa runs tasks of kind vqa or \
                 caption (classification tasks run with `spae-icl run`)",
                spec.name,
                spec.kind
            );
        };
        if spec.data != DATA {
            bail!(
                "task {}: data {:?}; captioning and VQA read easy-VQA only (data = \"{DATA}\")",
                spec.name,
                spec.data
            );
        }
        if self.words == WordSource::Teacher || self.teacher.is_some() {
            bail!(
                "--words teacher: easy-VQA reads the tokenizer's, the oracle's or random words; \
                 the teacher's words are for few-shot classification (`spae-icl run`, `table1`) \
                 and emoji captioning (`eval-vqa --task emoji-caption`)"
            );
        }
        if let Some(s) = spec
            .scorings
            .iter()
            .find(|s| !matches!(s, Scoring::Open | Scoring::Constrained))
        {
            bail!(
                "task {}: scoring {}; eval-vqa reports the open and the constrained answer (beside \
                 the blind and majority baselines), nothing else",
                spec.name,
                s.flag()
            );
        }
        Ok(task)
    }

    /// `runs/<task>-easy-vqa-<llm>` for a built-in task, `runs/<task file name>-<llm>` for
    /// another.
    pub fn default_out(&self) -> Result<PathBuf> {
        let task = self.vqa_task()?;
        let llm = slug(&self.common.llm.name);
        let folder = if self.task.name == task.task_name() {
            format!("{}-easy-vqa-{llm}", task.name())
        } else {
            format!("{}-{llm}", slug(&self.task.name))
        };
        Ok(crate::store::default_out(&[&folder]))
    }

    /// What must match for a rerun to resume a result folder. The built-in tasks keep the
    /// keys their folders have always had; a task that differs from them adds the setting it
    /// changes.
    fn identity(
        &self,
        task: VqaTask,
        checkpoint: &str,
        checkpoint_sha256: &str,
        template_sha256: &str,
    ) -> serde_json::Value {
        let c = &self.common;
        let mut id = serde_json::json!({
            "task": task.name(),
            "llm": c.llm.name,
            "checkpoint": checkpoint,
            "checkpoint_sha256": checkpoint_sha256,
            "template_sha256": template_sha256,
            "shots": c.shots,
            "layers": c.layers,
            "seed": c.seed,
        });
        if self.task.template != task.builtin_template() {
            id["template"] = serde_json::json!(self.task.template);
        }
        if self.split != "test" {
            id["split"] = serde_json::json!(self.split);
        }
        if self.max_tokens != MAX_ANSWER_TOKENS {
            id["max_tokens"] = serde_json::json!(self.max_tokens);
        }
        if c.support != SupportDraw::Form && task == VqaTask::Vqa {
            id["support"] = serde_json::json!(c.support.name());
        }
        if self.words != WordSource::Spae {
            id["words"] = serde_json::json!(self.words.name());
        }
        id
    }
}

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

/// The most frequent item (ties: the alphabetically first); "" when there is none.
fn most_common<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for a in items {
        *counts.entry(a).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by_key(|&(a, n)| (n, std::cmp::Reverse(a)))
        .map(|(a, _)| a.to_string())
        .unwrap_or_default()
}

/// The 24 captions "a <colour> <shape>", sorted: the candidates of a constrained caption.
fn all_captions() -> Vec<String> {
    let mut c: Vec<String> = EASY_VQA_COLOURS
        .iter()
        .flat_map(|c| EASY_VQA_SHAPES.iter().map(move |s| format!("a {c} {s}")))
        .collect();
    c.sort();
    c
}

/// The easy-VQA tokenizer, the LLM and the templates, checked for what VQA needs.
fn reader(c: &VqaCommonConfig) -> Result<Reader> {
    let r = Reader::load(&c.checkpoint_ref(), &c.llm, c.prompts.as_deref())?;
    // The tokenizer must read colour: easy-VQA's images are RGB (resized to the checkpoint's
    // side).
    let channels = r.spae.config().in_channels;
    if channels != 3 {
        bail!(
            "checkpoint {} reads gray images ({channels} channel); captioning and VQA \
             ask about the colours of easy-VQA's RGB images: pass an RGB easy-VQA checkpoint \
             (the built-in one is used when --checkpoint is not given)",
            r.checkpoint
        );
    }
    r.depth(c.layers)?;
    Ok(r)
}

/// Answers are text, so decoding is never constrained to codebook tokens.
impl Reader {
    /// A greedy answer: the text before the first period or newline.
    pub(crate) fn answer_open(&self, prompt: &Prompt, max_tokens: usize) -> Result<String> {
        let params = GenerateParams {
            max_tokens,
            stop: vec!["\n".into(), ".".into()],
            ..GenerateParams::default()
        };
        let c = self.block_on(self.llm.generate(prompt, &params))?;
        Ok(prompt::parse_answer(&c.text))
    }

    /// The log-probability of each candidate after the prompt (each follows a space), one per
    /// candidate or an error.
    pub(crate) fn score_candidates(
        &self,
        prompt: &Prompt,
        candidates: &[String],
    ) -> Result<Vec<f32>> {
        let spaced: Vec<String> = candidates.iter().map(|c| format!(" {c}")).collect();
        let scores = self.block_on(self.llm.score(prompt, &spaced))?;
        if scores.len() != candidates.len() {
            bail!(
                "{} returned {} scores for {} candidates",
                self.llm.name(),
                scores.len(),
                candidates.len()
            );
        }
        Ok(scores)
    }

    /// The candidate the model finds most likely after the prompt (each follows a space).
    fn answer_constrained(&self, prompt: &Prompt, candidates: &[String]) -> Result<String> {
        let scores = self.score_candidates(prompt, candidates)?;
        let best = prompt::constrained_choice(&scores)?;
        candidates
            .get(best)
            .cloned()
            .with_context(|| format!("no candidate answer {best}"))
    }

    /// The words of the image file `path`.
    fn query_words(&self, path: &Path, depth: usize) -> Result<ImageWords> {
        let cfg = self.spae.config();
        let x = spae_core::imageio::load_image(path, cfg.in_channels, cfg.image_size)?;
        let p = self.spae.tokenize(&x.unsqueeze(0)?, depth)?;
        let p = p
            .first()
            .with_context(|| format!("{}: the tokenizer returned no words", path.display()))?;
        Ok(ImageWords::of_pyramid(p, depth))
    }
}

/// The words of `images` of `data`, `depth` layers each, in batches.
pub(crate) fn words_of(
    spae: &SpaeModel,
    data: &spae_datasets::LabeledImages,
    images: &[usize],
    depth: usize,
) -> Result<Vec<ImageWords>> {
    let mut out = Vec::with_capacity(images.len());
    for chunk in images.chunks(BATCH) {
        let x = data.batch(chunk, &Device::Cpu)?;
        for p in spae.tokenize(&x, depth)? {
            out.push(ImageWords::of_pyramid(&p, depth));
        }
    }
    Ok(out)
}

/// The words of `images` of the easy-VQA split `data` as `source` gives them, `depth`
/// pyramid layers' worth each. The oracle's words are the image's true colour and shape
/// ("red circle red circle red", as tokens of the LLM's vocabulary): every question is
/// answerable from them. Random words are uniform over the codebook,
/// seeded by (`seed`, image), so an image reads the same in every prompt.
fn vqa_words(
    spae: &SpaeModel,
    data: &EasyVqa,
    images: &[usize],
    depth: usize,
    source: WordSource,
    seed: u64,
) -> Result<Vec<ImageWords>> {
    if source == WordSource::Spae {
        return words_of(spae, &data.images, images, depth);
    }
    let codebook = spae.codebook();
    let n_words = spae.config().pyramid.tokens_up_to(depth);
    let mut said: HashMap<String, (String, u32)> = HashMap::new();
    let mut out = Vec::with_capacity(images.len());
    for &i in images {
        // Apart from the support draw of item i, which starts from item_seed(seed, i).
        const WORDS: u64 = 0x776f_7264_7300_0000;
        let mut rng = StdRng::seed_from_u64(crate::util::item_seed(seed ^ WORDS, i));
        let pairs: Vec<(String, u32)> = match source {
            WordSource::Oracle => {
                let caption = data.caption(i);
                let mut parts = Vec::new();
                for word in caption.split(' ').filter(|w| *w != "a") {
                    if !said.contains_key(word) {
                        said.insert(word.to_string(), oracle_word(codebook, word)?);
                    }
                    parts.push(said[word].clone());
                }
                parts.iter().cloned().cycle().take(n_words).collect()
            }
            WordSource::Teacher => bail!("--words teacher: easy-VQA reads no teacher's words"),
            WordSource::Spae | WordSource::Random => (0..n_words)
                .map(|_| {
                    let e = rng.gen_range(0..codebook.len());
                    (codebook.word(e).to_string(), codebook.token_ids()[e])
                })
                .collect(),
        };
        let (words, token_ids) = pairs.into_iter().unzip();
        out.push(ImageWords { words, token_ids });
    }
    Ok(out)
}

/// `word` as the LLM reads it, one whole-word token: from the LLM's vocabulary, whether or
/// not the checkpoint's codebook kept it (the oracle is the ceiling of the LLM, not of one
/// codebook); the codebook entry nearest it when the LLM has no such token.
fn oracle_word(codebook: &spae_core::Codebook, word: &str) -> Result<(String, u32)> {
    if let Some(pair) = crate::fewshot::words::vocabulary_word(codebook, word)? {
        return Ok(pair);
    }
    let e = crate::fewshot::words::class_neighbours(codebook, word)?
        .first()
        .copied()
        .with_context(|| format!("no codebook entry near {word:?}"))?;
    Ok((codebook.word(e).to_string(), codebook.token_ids()[e]))
}

/// A split of easy-VQA at the checkpoint's side.
fn easy_vqa(split: Split, size: usize) -> Result<EasyVqa> {
    let cache = spae_assets::AssetCache::from_env();
    let mut data = spae_datasets::easy_vqa(&cache, split)?;
    data.images = data.images.resized(size);
    Ok(data)
}

/// Training questions by form and by text, for drawing a prompt's support questions.
struct QuestionIndex {
    by_form: HashMap<String, Vec<usize>>,
    by_question: HashMap<String, Vec<usize>>,
    len: usize,
}

impl QuestionIndex {
    fn new<'a>(questions: impl IntoIterator<Item = &'a str>) -> Self {
        let mut by_form: HashMap<String, Vec<usize>> = HashMap::new();
        let mut by_question: HashMap<String, Vec<usize>> = HashMap::new();
        let mut len = 0;
        for (i, q) in questions.into_iter().enumerate() {
            by_form.entry(question_form(q)).or_default().push(i);
            by_question.entry(q.to_string()).or_default().push(i);
            len = i + 1;
        }
        Self {
            by_form,
            by_question,
            len,
        }
    }

    /// `shots` questions drawn with `rng`: by `draw`, of `question` itself or of its form,
    /// falling back to the form where the question is asked fewer than `shots` times, and to
    /// any question where the form has none.
    fn draw(
        &self,
        question: &str,
        shots: usize,
        draw: SupportDraw,
        rng: &mut StdRng,
    ) -> Vec<usize> {
        let all: Vec<usize>;
        let same = match draw {
            SupportDraw::Question => self.by_question.get(question).filter(|p| p.len() >= shots),
            SupportDraw::Form => None,
        };
        let pool = match same.or_else(|| self.by_form.get(&question_form(question))) {
            Some(p) => p,
            None => {
                all = (0..self.len).collect();
                &all
            }
        };
        index::sample(rng, pool.len(), shots.min(pool.len()))
            .into_iter()
            .map(|k| pool[k])
            .collect()
    }
}

/// easy-VQA's training split in SPAE words: the support pool of every prompt.
struct SupportPool {
    train: EasyVqa,
    words: Vec<ImageWords>,
    /// Training questions by form and by text.
    questions: QuestionIndex,
    /// The most frequent training answer per question (the blind baseline: it sees the
    /// question, not the image).
    majority_by_question: HashMap<String, String>,
    /// The most frequent answer over all training questions.
    majority_answer: String,
    /// The most frequent training caption.
    majority_caption: String,
}

impl SupportPool {
    fn new(spae: &SpaeModel, depth: usize, source: WordSource, seed: u64) -> Result<Self> {
        let train = easy_vqa(Split::Train, spae.config().image_size)
            .context("reading easy-VQA's training split (the support pool)")?;
        let all: Vec<usize> = (0..train.images.len()).collect();
        let words = vqa_words(spae, &train, &all, depth, source, seed)?;
        let questions = QuestionIndex::new(train.questions.iter().map(|q| q.question.as_str()));
        let majority_by_question = questions
            .by_question
            .iter()
            .map(|(q, asked)| {
                let answers = asked.iter().map(|&i| train.questions[i].answer.as_str());
                (q.clone(), most_common(answers))
            })
            .collect();
        let majority_answer = most_common(train.questions.iter().map(|q| q.answer.as_str()));
        let captions: Vec<String> = (0..train.images.len()).map(|i| train.caption(i)).collect();
        let majority_caption = most_common(captions.iter().map(String::as_str));
        Ok(Self {
            train,
            words,
            questions,
            majority_by_question,
            majority_answer,
            majority_caption,
        })
    }

    /// `shots` training images (at most all of them) to caption in context, drawn with `rng`.
    fn captioned(&self, shots: usize, rng: &mut StdRng) -> Vec<usize> {
        let n = self.train.images.len();
        index::sample(rng, n, shots.min(n)).into_vec()
    }

    /// The blind baseline's answer: the most frequent training answer to the same question
    /// (every test question's text occurs in training; else the overall majority).
    fn blind_answer(&self, question: &str) -> &str {
        self.majority_by_question
            .get(question)
            .unwrap_or(&self.majority_answer)
    }

    /// Words per image, for the report.
    fn words_per_image(&self) -> usize {
        self.words.first().map_or(0, |w| w.words.len())
    }

    /// The VQA prompt: `support` training questions, then the query's words and question.
    fn vqa_prompt(
        &self,
        r: &Reader,
        template: &str,
        support: &[usize],
        query: &ImageWords,
        question: &str,
    ) -> Result<Prompt> {
        let mut items = Vec::with_capacity(support.len());
        let mut slots: Vec<&ImageWords> = Vec::with_capacity(support.len() + 1);
        for (k, &qi) in support.iter().enumerate() {
            let q = self
                .train
                .questions
                .get(qi)
                .with_context(|| format!("no training question {qi}"))?;
            slots.push(
                self.words
                    .get(q.image)
                    .with_context(|| format!("training question {qi}: no image {}", q.image))?,
            );
            items.push(VqaItem {
                image: prompt::image_slot(k),
                question: q.question.clone(),
                answer: q.answer.clone(),
            });
        }
        slots.push(query);
        let ctx = VqaContext {
            support: items,
            query: prompt::image_slot(support.len()),
            question: question.to_string(),
        };
        r.prompt(template, &ctx, &slots)
    }

    /// The captioning prompt: `support` captioned training images, then the query's words.
    fn caption_prompt(
        &self,
        r: &Reader,
        template: &str,
        support: &[usize],
        query: &ImageWords,
    ) -> Result<Prompt> {
        let mut items = Vec::with_capacity(support.len());
        let mut slots: Vec<&ImageWords> = Vec::with_capacity(support.len() + 1);
        for (k, &i) in support.iter().enumerate() {
            slots.push(
                self.words
                    .get(i)
                    .with_context(|| format!("no training image {i}"))?,
            );
            items.push(CaptionItem {
                image: prompt::image_slot(k),
                caption: self.train.caption(i),
            });
        }
        slots.push(query);
        let ctx = CaptionContext {
            support: items,
            query: prompt::image_slot(support.len()),
        };
        r.prompt(template, &ctx, &slots)
    }
}

/// One captioned image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Captioned {
    pub image: PathBuf,
    pub caption: String,
}

/// Captions of `images`, one each, from `cfg.shots` captioned easy-VQA training images in
/// context (drawn with `cfg.seed`, in turn for each image). `each` sees every caption as it
/// is made, so a caller can show it before the next one is asked for.
pub fn caption_each(
    cfg: &VqaCommonConfig,
    images: &[PathBuf],
    mut each: impl FnMut(&Captioned) -> Result<()>,
) -> Result<Vec<Captioned>> {
    let r = reader(cfg)?;
    let depth = cfg.layers;
    let pool = SupportPool::new(&r.spae, depth, WordSource::Spae, cfg.seed)?;
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut out = Vec::with_capacity(images.len());
    for path in images {
        let q = r.query_words(path, depth)?;
        let support = pool.captioned(cfg.shots, &mut rng);
        let p = pool.caption_prompt(&r, CAPTION_TEMPLATE, &support, &q)?;
        let caption = r
            .answer_open(&p, MAX_ANSWER_TOKENS)
            .with_context(|| format!("captioning {}", path.display()))?;
        let c = Captioned {
            image: path.clone(),
            caption,
        };
        each(&c)?;
        out.push(c);
    }
    Ok(out)
}

/// Captions of `images` (see [`caption_each`]).
pub fn caption(cfg: &VqaCommonConfig, images: &[PathBuf]) -> Result<Vec<Captioned>> {
    caption_each(cfg, images, |_| Ok(()))
}

/// The model's answer to `question` about `image`, from `cfg.shots` answered training
/// questions in context (drawn by `cfg.support`): the most likely of easy-VQA's 13 answers, or with
/// `open` its own words up to the first period.
pub fn vqa(cfg: &VqaCommonConfig, image: &Path, question: &str, open: bool) -> Result<String> {
    let r = reader(cfg)?;
    let depth = cfg.layers;
    let pool = SupportPool::new(&r.spae, depth, WordSource::Spae, cfg.seed)?;
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let q = r.query_words(image, depth)?;
    let question = question.trim().to_lowercase();
    let support = pool
        .questions
        .draw(&question, cfg.shots, cfg.support, &mut rng);
    let p = pool.vqa_prompt(&r, VQA_TEMPLATE, &support, &q, &question)?;
    if open {
        r.answer_open(&p, MAX_ANSWER_TOKENS)
    } else {
        r.answer_constrained(&p, &pool.train.answers)
    }
}

/// One evaluated test item: a line of `results.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemResult {
    /// Position in the seeded draw of test items.
    pub item: usize,
    /// Index of the test question (VQA) or image (captioning).
    pub index: usize,
    /// The question ("" for captioning).
    pub question: String,
    pub truth: String,
    /// `colour`, `shape`, `yes/no` or `caption`.
    pub kind: String,
    pub open: String,
    pub open_correct: bool,
    pub constrained: String,
    pub constrained_correct: bool,
    pub blind: String,
    pub blind_correct: bool,
    pub majority_correct: bool,
}

/// Accuracy, and the low and high end of its 95% Wilson interval.
pub type Accuracy = (f64, f64, f64);

/// Accuracy of each answerer over the items of one answer kind (`all`: every item).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KindRow {
    pub kind: String,
    pub items: usize,
    pub open: Accuracy,
    pub constrained: Accuracy,
    pub blind: Accuracy,
    pub majority: Accuracy,
}

/// How often one answerer's caption has the right colour, and the right shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartRow {
    pub answerer: String,
    pub colour: Accuracy,
    pub shape: Accuracy,
}

/// Accuracy (with its 95% interval) of each answerer, over all items and per answer kind;
/// for captions also how often the colour and the shape alone are right (`summary.json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VqaSummary {
    pub kinds: Vec<KindRow>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub caption_parts: Vec<PartRow>,
}

/// What [`eval_vqa`] measured and wrote.
#[derive(Debug, Clone)]
pub struct EvalVqaSummary {
    /// The result folder.
    pub out: PathBuf,
    pub summary: VqaSummary,
    /// `summary.md`: the report, as `eval-vqa` prints it.
    pub markdown: String,
    /// Items asked for in this run; the others were read back from the result folder.
    pub asked: usize,
}

/// Runs (or resumes) `cfg`: answer accuracy over easy-VQA's test items beside the
/// majority-answer and blind (question-only) baselines. Writes `run.json`, `results.jsonl`
/// (one line per item as it finishes), `summary.json` and `summary.md` into the result
/// folder; an error midway keeps every item finished before it.
pub fn eval_vqa(cfg: &EvalVqaConfig) -> Result<EvalVqaSummary> {
    let task = cfg.vqa_task()?;
    let split: Split = cfg
        .split
        .parse()
        .map_err(|e: String| EvalError::msg(format!("--split: {e}")))?;
    let template = cfg.task.template.as_str();
    let c = &cfg.common;
    let r = reader(c)?;
    let depth = c.layers;
    let out = match &cfg.out {
        Some(o) => o.clone(),
        None => cfg.default_out()?,
    };
    let template_sha256 = sha256_hex(r.templates.source(template)?.as_bytes());
    let identity = cfg.identity(
        task,
        &r.checkpoint,
        &c.checkpoint_ref().sha256()?,
        &template_sha256,
    );
    let mut store: ResultStore<ItemResult> = open_results(
        &out,
        &identity,
        &serde_json::json!({ "limit": cfg.limit }),
        |r: &ItemResult| r.item,
    )?;

    let pool = SupportPool::new(&r.spae, depth, cfg.words, c.seed)?;
    let test = easy_vqa(split, r.spae.config().image_size)
        .with_context(|| format!("reading easy-VQA's {} split", cfg.split))?;
    let population = match task {
        VqaTask::Vqa => test.questions.len(),
        VqaTask::Caption => test.images.len(),
    };
    let limit = cfg.limit.min(population);
    // A seeded order of the whole split, cut at `limit`: a larger limit keeps every item a
    // smaller one drew, so a rerun with more items resumes instead of starting over.
    let mut rng = StdRng::seed_from_u64(c.seed);
    let mut picked = index::sample(&mut rng, population, population).into_vec();
    picked.truncate(limit);

    // An item counts as done only if it is the test item this draw gives it.
    let is_done = |store: &ResultStore<ItemResult>, item: usize| {
        store.get(item).is_some_and(|r| r.index == picked[item])
    };
    let todo: Vec<usize> = (0..limit).filter(|&i| !is_done(&store, i)).collect();
    let test_images: Vec<usize> = todo
        .iter()
        .map(|&item| match task {
            VqaTask::Vqa => test.questions[picked[item]].image,
            VqaTask::Caption => picked[item],
        })
        .collect();
    let test_words = vqa_words(&r.spae, &test, &test_images, depth, cfg.words, c.seed)?;
    let asker = Asker {
        cfg,
        task,
        reader: &r,
        pool: &pool,
        test: &test,
        captions: all_captions(),
    };
    let bar = crate::progress::bar(todo.len() as u64, "items");
    for (k, &item) in todo.iter().enumerate() {
        let result = asker
            .ask(item, picked[item], &test_words[k])
            .with_context(|| {
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

    let rows: Vec<&ItemResult> = (0..limit).filter_map(|i| store.get(i)).collect();
    let summary = summarize(&rows);
    let header = Header {
        task,
        llm: &c.llm.name,
        seed: c.seed,
        shots: c.shots,
        support: c.support,
        depth,
        words: pool.words_per_image(),
        source: cfg.words,
        checkpoint: &r.checkpoint,
        majority: match task {
            VqaTask::Vqa => &pool.majority_answer,
            VqaTask::Caption => &pool.majority_caption,
        },
        argv: crate::util::invocation("eval-vqa"),
    };
    let md = markdown(&header, &summary);
    write_atomic(&out.join("summary.md"), &md)?;
    write_atomic(
        &out.join("summary.json"),
        &serde_json::to_string_pretty(&summary)?,
    )?;
    Ok(EvalVqaSummary {
        out,
        summary,
        markdown: md,
        asked: todo.len(),
    })
}

/// What every test item is asked with.
struct Asker<'a> {
    cfg: &'a EvalVqaConfig,
    task: VqaTask,
    reader: &'a Reader,
    pool: &'a SupportPool,
    test: &'a EasyVqa,
    /// The candidates of a constrained caption.
    captions: Vec<String>,
}

impl Asker<'_> {
    /// Asks the model about test item `item` (test question or image `idx`, whose words are
    /// `words`).
    fn ask(&self, item: usize, idx: usize, words: &ImageWords) -> Result<ItemResult> {
        let Self {
            cfg,
            task,
            reader: r,
            pool,
            test,
            ref captions,
        } = *self;
        let c = &cfg.common;
        let template = cfg.task.template.as_str();
        // Each item draws its support from (seed, item): a resumed run sees the same prompts.
        let mut irng = StdRng::seed_from_u64(crate::util::item_seed(c.seed, item));
        Ok(match task {
            VqaTask::Vqa => {
                let q = &test.questions[idx];
                let support = pool
                    .questions
                    .draw(&q.question, c.shots, c.support, &mut irng);
                let p = pool.vqa_prompt(r, template, &support, words, &q.question)?;
                let open = r.answer_open(&p, cfg.max_tokens)?;
                let constrained = r.answer_constrained(&p, &pool.train.answers)?;
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
                let support = pool.captioned(c.shots, &mut irng);
                let p = pool.caption_prompt(r, template, &support, words)?;
                let open = r.answer_open(&p, cfg.max_tokens)?;
                let constrained = r.answer_constrained(&p, captions)?;
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
        })
    }
}

/// What one answerer said for an item.
type Said = fn(&ItemResult) -> &str;

/// Word `k` of "a <colour> <shape>".
fn caption_word(caption: &str, k: usize) -> &str {
    caption.split(' ').nth(k).unwrap_or("")
}

/// The summary of `rows`: every item, then each answer kind when there are several; for
/// captions also the colour and the shape alone.
pub fn summarize(rows: &[&ItemResult]) -> VqaSummary {
    let mut kinds: Vec<String> = rows.iter().map(|r| r.kind.clone()).collect();
    kinds.sort();
    kinds.dedup();
    let acc = |of: &[&&ItemResult], right: fn(&ItemResult) -> bool| {
        prompt::accuracy_with_interval(&of.iter().map(|r| right(r)).collect::<Vec<_>>())
    };
    let row = |kind: &str, of: Vec<&&ItemResult>| KindRow {
        kind: kind.to_string(),
        items: of.len(),
        open: acc(&of, |r| r.open_correct),
        constrained: acc(&of, |r| r.constrained_correct),
        blind: acc(&of, |r| r.blind_correct),
        majority: acc(&of, |r| r.majority_correct),
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
    VqaSummary {
        kinds: out,
        caption_parts,
    }
}

/// What the report says about the run besides the numbers.
struct Header<'a> {
    task: VqaTask,
    llm: &'a str,
    seed: u64,
    shots: usize,
    support: SupportDraw,
    depth: usize,
    /// Words per image.
    words: usize,
    /// Whose words.
    source: WordSource,
    checkpoint: &'a str,
    /// The majority answer (or caption).
    majority: &'a str,
    /// The arguments after `eval-vqa`.
    argv: String,
}

/// The report (`summary.md`).
fn markdown(h: &Header, s: &VqaSummary) -> String {
    let pct = |a: Accuracy| {
        format!(
            "{:.1} [{:.1}, {:.1}]",
            100.0 * a.0,
            100.0 * a.1,
            100.0 * a.2
        )
    };
    let (title, what, support, cands, blind) = match h.task {
        VqaTask::Vqa => (
            "Visual question answering in context",
            "questions of the test split",
            h.support.describe(),
            "the 13 answers",
            "Blind: the most frequent training answer to the same question (it reads the question, not the image)",
        ),
        VqaTask::Caption => (
            "Captioning in context",
            "images of the test split",
            " (random captioned training images)",
            "the 24 captions \"a <colour> <shape>\"",
            "Blind: the most frequent training caption (the same as the majority)",
        ),
    };
    let mut md = format!(
        "# {title} on easy-VQA, {llm}\n\n\
         {n} {what} (drawn with seed {seed}); {shots} support items per prompt{support}, \
         {depth} pyramid layers per image ({words} words{source}); checkpoint `{checkpoint}`.\n\
         Written by `spae-icl eval-vqa {argv}`.\n\n\
         Accuracy in % with 95% Wilson intervals. Open: the greedy continuation up to the first \
         period, exact match. Constrained: the most likely of {cands}. Majority: always \
         \"{majority}\". {blind}.\n\n\
         | answers | items | open | constrained | blind | majority |\n|---|---|---|---|---|---|\n",
        llm = h.llm,
        n = s.kinds.first().map_or(0, |k| k.items),
        seed = h.seed,
        shots = h.shots,
        depth = h.depth,
        words = h.words,
        checkpoint = h.checkpoint,
        argv = h.argv,
        majority = h.majority,
        source = match h.source {
            WordSource::Spae => "",
            WordSource::Oracle => ", the oracle's: the true colour and shape",
            WordSource::Random => ", random codebook words",
            WordSource::Teacher => ", the teacher's most relevant codebook entries",
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

    /// The oracle's words of an image are its true colour and shape as LLM tokens, the same
    /// every time; random words are seeded, and come from anywhere in the codebook.
    #[test]
    fn oracle_words_are_the_true_colour_and_shape() {
        let (spae, _) = CheckpointRef::new(None, BuiltIn::EasyVqa)
            .load(&Device::Cpu)
            .unwrap();
        let test = easy_vqa(Split::Test, spae.config().image_size).unwrap();
        let images: Vec<usize> = (0..40).collect();
        let oracle = vqa_words(&spae, &test, &images, 2, WordSource::Oracle, 0).unwrap();
        assert_eq!(
            oracle,
            vqa_words(&spae, &test, &images, 2, WordSource::Oracle, 0).unwrap()
        );
        let codebook = spae.codebook();
        let mut captions = std::collections::HashSet::new();
        for (&i, w) in images.iter().zip(&oracle) {
            assert_eq!(w.words.len(), 5, "2 layers: 1 + 4 words");
            let caption = test.caption(i);
            let parts: Vec<&str> = caption.split(' ').filter(|p| *p != "a").collect();
            for (k, word) in w.words.iter().enumerate() {
                assert_eq!(word, parts[k % parts.len()], "{caption}: {:?}", w.words);
            }
            captions.insert(caption);
        }
        // Every colour and shape is a whole-word Gemma 3 token, whether or not the codebook
        // kept it; where it did, the ids agree.
        for word in EASY_VQA_COLOURS.iter().chain(&EASY_VQA_SHAPES) {
            let (w, id) = oracle_word(codebook, word).unwrap();
            assert_eq!(&w, word);
            if let Some(e) = (0..codebook.len()).find(|&e| codebook.word(e) == *word) {
                assert_eq!(codebook.token_ids()[e], id, "{word}");
            }
        }
        assert!(captions.len() > 3, "{captions:?}");
        let random = vqa_words(&spae, &test, &images, 2, WordSource::Random, 0).unwrap();
        assert_eq!(
            random,
            vqa_words(&spae, &test, &images, 2, WordSource::Random, 0).unwrap()
        );
        let other = vqa_words(&spae, &test, &images, 2, WordSource::Random, 1).unwrap();
        assert_ne!(random, other);
        // 200 words uniform over 4,096 entries: (a little) repeats, never 20 neighbours only.
        let distinct: std::collections::HashSet<&u32> =
            random.iter().flat_map(|w| &w.token_ids).collect();
        assert!(distinct.len() > 150, "{}", distinct.len());
    }

    fn item(item: usize, kind: &str, truth: &str, open: &str, constrained: &str) -> ItemResult {
        let blind = if kind == "caption" {
            "a red circle"
        } else {
            "yes"
        };
        ItemResult {
            item,
            index: item,
            question: String::new(),
            truth: truth.into(),
            kind: kind.into(),
            open: open.into(),
            open_correct: open == truth,
            constrained: constrained.into(),
            constrained_correct: constrained == truth,
            blind: blind.into(),
            blind_correct: blind == truth,
            majority_correct: blind == truth,
        }
    }

    /// Support questions come from the query's form, or from its own question where training
    /// asks it often enough.
    #[test]
    fn support_questions_by_form_or_by_question() {
        let train = [
            "what color is the circle?",   // 0
            "what color is the triangle?", // 1
            "is there a red shape?",       // 2
            "what color is the circle?",   // 3
            "what color is the circle?",   // 4
            "is there a blue shape?",      // 5
        ];
        let index = QuestionIndex::new(train);
        let mut rng = StdRng::seed_from_u64(0);
        let mut drawn = |q: &str, shots: usize, draw: SupportDraw| {
            let mut d = index.draw(q, shots, draw, &mut rng);
            d.sort();
            d
        };
        let q = "what color is the circle?";
        assert_eq!(drawn(q, 3, SupportDraw::Question), [0, 3, 4]);
        assert_eq!(drawn(q, 4, SupportDraw::Form), [0, 1, 3, 4]);
        // Asked 3 times: 4 shots fall back to the form.
        assert_eq!(drawn(q, 4, SupportDraw::Question), [0, 1, 3, 4]);
        // Any two of the form's four, then never a question of another form.
        for _ in 0..20 {
            let d = drawn(q, 2, SupportDraw::Form);
            assert!(d.iter().all(|i| [0, 1, 3, 4].contains(i)), "{d:?}");
            let d = drawn("is there a green shape?", 2, SupportDraw::Question);
            assert_eq!(d, [2, 5]);
        }
        // A form training never asks: any question.
        assert_eq!(
            drawn("how many shapes?", 6, SupportDraw::Question),
            [0, 1, 2, 3, 4, 5]
        );
    }

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

    #[test]
    fn majorities_break_ties_alphabetically() {
        assert_eq!(most_common(["no", "yes", "yes", "no", "blue"]), "no");
        assert_eq!(most_common(["yes", "yes", "no"]), "yes");
        assert_eq!(most_common(std::iter::empty()), "");
        let c = all_captions();
        assert_eq!(c.len(), 24);
        assert_eq!(c[0], "a black circle");
        assert!(c.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn the_config_comes_from_the_task_file() {
        for task in VqaTask::ALL {
            let cfg = EvalVqaConfig::builtin(task).unwrap();
            assert_eq!(cfg.vqa_task().unwrap(), task);
            assert_eq!(cfg.common.shots, 16);
            assert_eq!(cfg.common.layers, 2);
            assert_eq!(cfg.common.seed, 0);
            assert_eq!(cfg.limit, 300);
            assert_eq!(cfg.max_tokens, MAX_ANSWER_TOKENS);
            assert_eq!(cfg.split, "test");
            assert_eq!(cfg.task.template, task.builtin_template());
            assert_eq!(cfg.common.llm, LlmConfig::default());
        }
        let support = |task| EvalVqaConfig::builtin(task).unwrap().common.support;
        assert_eq!(support(VqaTask::Vqa), SupportDraw::Question);
        assert_eq!(support(VqaTask::Caption), SupportDraw::Form);
        assert_eq!(VqaTask::Vqa.builtin_template(), "vqa");
        assert_eq!(VqaTask::Caption.builtin_template(), "captioning");
        assert_eq!(VqaCommonConfig::default().shots, 16);
        let common: VqaCommonConfig = serde_json::from_str("{\"seed\": 3}").unwrap();
        assert_eq!((common.shots, common.layers, common.seed), (16, 2, 3));
        assert_eq!(common.support, SupportDraw::Form);
        assert_eq!(
            serde_json::to_string(&VqaTask::Caption).unwrap(),
            "\"caption\""
        );
        assert_eq!(
            serde_json::from_str::<VqaTask>("\"vqa\"").unwrap(),
            VqaTask::Vqa
        );
    }

    #[test]
    fn folders_go_under_runs_and_builtin_identities_keep_their_keys() {
        let cfg = EvalVqaConfig::builtin(VqaTask::Vqa).unwrap();
        assert_eq!(
            cfg.default_out().unwrap(),
            Path::new("runs/vqa-easy-vqa-local_gemma3-270m")
        );
        let id = cfg.identity(VqaTask::Vqa, "<ckpt>", "c0ffee", "beef");
        assert_eq!(
            id,
            serde_json::json!({
                "task": "vqa", "llm": "local:gemma3-270m", "checkpoint": "<ckpt>",
                "checkpoint_sha256": "c0ffee", "template_sha256": "beef",
                "shots": 16, "layers": 2, "seed": 0, "support": "question",
            })
        );
        // Folders of form-drawn support (the built-in's earlier default) keep their keys.
        let mut form = cfg.clone();
        form.common.support = SupportDraw::Form;
        assert!(form
            .identity(VqaTask::Vqa, "<ckpt>", "c0ffee", "beef")
            .get("support")
            .is_none());
        let mut other = EvalVqaConfig::builtin(VqaTask::Caption).unwrap();
        assert_eq!(
            other.default_out().unwrap(),
            Path::new("runs/caption-easy-vqa-local_gemma3-270m")
        );
        other.task.template = "my_captions".into();
        other.task.name = "my captions".into();
        let id = other.identity(VqaTask::Caption, "<ckpt>", "c0ffee", "beef");
        assert_eq!(id["template"], "my_captions");
        assert!(id.get("split").is_none() && id.get("max_tokens").is_none());
        assert_eq!(
            other.default_out().unwrap(),
            Path::new("runs/my_captions-local_gemma3-270m")
        );
    }

    #[test]
    fn tasks_it_cannot_run_are_refused_by_name() {
        let cfg = EvalVqaConfig::for_task(TaskSpec::resolve("mnist").unwrap());
        let err = cfg.vqa_task().unwrap_err().to_string();
        assert!(err.contains("mnist") && err.contains("kind"), "{err}");
        let mut cfg = EvalVqaConfig::builtin(VqaTask::Vqa).unwrap();
        cfg.task.scorings = vec![Scoring::Calibrated];
        let err = cfg.vqa_task().unwrap_err().to_string();
        assert!(err.contains("calibrated"), "{err}");
    }

    #[test]
    fn vqa_summaries_split_by_answer_kind() {
        let rows = [
            item(0, "colour", "red", "red", "red"),
            item(1, "colour", "blue", "no", "red"),
            item(2, "yes/no", "yes", "yes", "no"),
        ];
        let refs: Vec<&ItemResult> = rows.iter().collect();
        let s = summarize(&refs);
        let kinds: Vec<(&str, usize)> =
            s.kinds.iter().map(|k| (k.kind.as_str(), k.items)).collect();
        assert_eq!(kinds, [("all", 3), ("colour", 2), ("yes/no", 1)]);
        assert!((s.kinds[0].open.0 - 2.0 / 3.0).abs() < 1e-9);
        assert!((s.kinds[1].constrained.0 - 0.5).abs() < 1e-9);
        assert_eq!(s.kinds[2].blind.0, 1.0);
        assert!(s.caption_parts.is_empty());
        let json = serde_json::to_value(&s).unwrap();
        assert!(json.get("caption_parts").is_none(), "{json}");
        let md = markdown(
            &Header {
                task: VqaTask::Vqa,
                llm: "local:gemma3-270m",
                seed: 0,
                shots: 16,
                support: SupportDraw::Form,
                depth: 2,
                words: 5,
                source: WordSource::Spae,
                checkpoint: "<built-in spae-gemma3-easy-vqa>",
                majority: "no",
                argv: "--task vqa".into(),
            },
            &s,
        );
        assert!(md.starts_with("# Visual question answering in context on easy-VQA, local:gemma3-270m\n\n3 questions of the test split (drawn with seed 0); 16 support items per prompt (training questions of the query's form), 2 pyramid layers per image (5 words)"), "{md}");
        assert!(
            md.contains("Written by `spae-icl eval-vqa --task vqa`."),
            "{md}"
        );
        assert!(md.contains("Majority: always \"no\"."), "{md}");
        assert!(md.contains("| colour | 2 | 50.0 ["), "{md}");
        assert!(!md.contains("colour right"), "{md}");
    }

    #[test]
    fn caption_summaries_score_colour_and_shape_alone() {
        let rows = [
            item(0, "caption", "a red circle", "a red square", "a red circle"),
            item(
                1,
                "caption",
                "a blue triangle",
                "a green triangle",
                "a red circle",
            ),
        ];
        let refs: Vec<&ItemResult> = rows.iter().collect();
        let s = summarize(&refs);
        assert_eq!(s.kinds.len(), 1);
        let parts: Vec<(&str, f64, f64)> = s
            .caption_parts
            .iter()
            .map(|p| (p.answerer.as_str(), p.colour.0, p.shape.0))
            .collect();
        assert_eq!(
            parts,
            [
                ("open", 0.5, 0.5),
                ("constrained", 0.5, 0.5),
                ("majority", 0.5, 0.5)
            ]
        );
        assert_eq!(caption_word("a red", 2), "");
        let md = markdown(
            &Header {
                task: VqaTask::Caption,
                llm: "m",
                seed: 1,
                shots: 4,
                support: SupportDraw::Form,
                depth: 3,
                words: 21,
                source: WordSource::Spae,
                checkpoint: "c",
                majority: "a red circle",
                argv: String::new(),
            },
            &s,
        );
        assert!(
            md.starts_with("# Captioning in context on easy-VQA, m\n\n2 images of the test split"),
            "{md}"
        );
        assert!(
            md.contains(
                "| answerer | colour right | shape right |\n|---|---|---|\n| open | 50.0 ["
            ),
            "{md}"
        );
    }
}
