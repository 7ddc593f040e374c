//! Few-shot classification by a frozen LLM that reads SPAE image words, in the episodes of
//! Frozen (Tsimpoukelli et al. 2021), the protocol of the paper's Table 1 (Sec. 4.1).
//!
//! Images become the words of their first `layers` pyramid layers; each episode's prompt is
//! rendered from the task's template with an image slot per image; a local model reads the
//! image words as their exact token ids, an API model as text. Results go to the output folder
//! as they finish, so a rerun asks only for the episodes still missing.

pub mod results;
pub mod words;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Device;
use llm_client::{GenerateParams, LanguageModel, Prompt};
use prompt::{Episode, EpisodeConfig, FewShotContext, Segment, Templates};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::bail;
use crate::error::{Context, Result};
use crate::llm::{check_vocabulary, LlmConfig, PromptForm};
use crate::store::{open_results, ResultStore};
use crate::task::{Task, TaskSpec};
use crate::tokenizer::{BuiltIn, CheckpointRef};
use crate::util::{sha256_hex, slug, write_atomic};
use results::{EpisodeResult, ScoringResult};
use words::ImageWords;

/// The content-free query of contextual calibration (Zhao et al. 2021).
pub const CONTENT_FREE: &str = "N/A";

/// What stands for an image in the prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WordSource {
    /// The tokenizer checkpoint's words for the image (SPAE).
    Spae,
    /// Words drawn from the codebook entries nearest the class name: the ceiling this LLM
    /// and template allow.
    Oracle,
    /// Random codebook words: chance, as this LLM sees it.
    Random,
    /// The teacher's words: each image's most relevant codebook entries under a semantic
    /// scorer (the teacher a tokenizer was trained against, [`RunConfig::teacher`]), most
    /// relevant first, as many as the SPAE words at the run's depth, each entry once. The
    /// ceiling of a tokenizer distilled from that teacher: no tokenizer trained against it is
    /// expected to do much better than its own top words.
    Teacher,
}

impl WordSource {
    pub const ALL: [WordSource; 4] = [
        WordSource::Spae,
        WordSource::Oracle,
        WordSource::Random,
        WordSource::Teacher,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Spae => "spae",
            Self::Oracle => "oracle",
            Self::Random => "random",
            Self::Teacher => "teacher",
        }
    }
}

/// The teacher of a [`WordSource::Teacher`] run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeacherConfig {
    /// A scorer spec, as `train --scorer` takes it ([`crate::scorer::load_scorer`]).
    pub scorer: String,
    /// The side the teacher reads the task's images at; `None`: the checkpoint's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_size: Option<usize>,
}

impl TeacherConfig {
    /// What a result folder records of the teacher: its spec, the scorer's hash (so a
    /// retrained teacher does not resume another's results) and the side it read.
    pub fn identity(&self, side: Option<usize>) -> Result<serde_json::Value> {
        Ok(serde_json::json!({
            "scorer": self.scorer,
            "scorer_sha256": crate::scorer::scorer_sha256(&self.scorer)?,
            "image_size": side,
        }))
    }
}

/// How the LLM's answer is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scoring {
    /// Greedy generation, exact match of the text before the first period (the paper's metric).
    Open,
    /// The class name with the highest log-probability.
    Constrained,
    /// Constrained, divided by the class probabilities of a content-free query (Zhao et al. 2021).
    Calibrated,
    /// Greedy decoding restricted, token by token, to continuations of a class name.
    ConstrainedDecoding,
}

impl Scoring {
    pub const ALL: [Scoring; 4] = [
        Scoring::Open,
        Scoring::Constrained,
        Scoring::Calibrated,
        Scoring::ConstrainedDecoding,
    ];

    /// The name a task file and `--scoring` take.
    pub fn flag(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Constrained => "constrained",
            Self::Calibrated => "calibrated",
            Self::ConstrainedDecoding => "constrained-decoding",
        }
    }

    /// The name in result files.
    pub fn key(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Constrained => "constrained",
            Self::Calibrated => "calibrated",
            Self::ConstrainedDecoding => "constrained_decoding",
        }
    }
}

/// One few-shot run: a task, its episode settings, the tokenizer and the LLM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    pub task: TaskSpec,
    /// What `{data}` in the task's data stands for.
    pub data: Option<PathBuf>,
    pub split: String,
    pub checkpoint: CheckpointRef,
    pub llm: LlmConfig,
    pub way: usize,
    pub shots: usize,
    pub repeats: usize,
    pub induction: bool,
    pub episodes: usize,
    pub seed: u64,
    pub layers: usize,
    pub words: WordSource,
    /// In order; the first is each result line's `prediction`.
    pub scorings: Vec<Scoring>,
    /// A folder of templates that replace the shipped ones of the same name.
    pub prompts: Option<PathBuf>,
    /// Send image words as text even to a local model.
    pub text_prompts: bool,
    pub max_tokens: usize,
    /// Default: `runs/<task>/<settings>`.
    pub out: Option<PathBuf>,
    /// Whose words [`WordSource::Teacher`] reads; only with those words. Absent from the
    /// serialised form of the other runs, which keep the form they always had.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher: Option<TeacherConfig>,
}

impl RunConfig {
    /// `task` with its own defaults, the built-in tokenizer and the default local LLM.
    pub fn for_task(task: TaskSpec) -> Self {
        let d = task.defaults.clone();
        let tokenizer = task.tokenizer.unwrap_or(BuiltIn::MnistFashion);
        Self {
            split: task.split.clone(),
            scorings: task.scorings.clone(),
            task,
            data: None,
            checkpoint: CheckpointRef::new(None, tokenizer),
            llm: LlmConfig::default(),
            way: d.way,
            shots: d.shots,
            repeats: d.repeats,
            induction: d.induction,
            episodes: d.episodes,
            seed: 0,
            layers: d.layers,
            words: WordSource::Spae,
            prompts: None,
            text_prompts: false,
            max_tokens: d.max_tokens,
            out: None,
            teacher: None,
        }
    }

    /// `runs/<task>/<settings>`: one directory per setting, so reruns resume and settings
    /// never mix. The settings name the tokenizer by its checkpoint's hash, so a new
    /// checkpoint starts its own directory instead of meeting the old one's results.
    pub fn default_out(&self, checkpoint_sha256: &str) -> PathBuf {
        Path::new("runs").join(&self.task.name).join(format!(
            "{}-{}way-{}shot-r{}-{}-L{}-seed{}-{}-ckpt{}",
            self.words.name(),
            self.way,
            self.shots,
            self.repeats,
            if self.induction { "ind" } else { "noind" },
            self.layers,
            self.seed,
            slug(&self.llm.name),
            checkpoint_sha256.get(..8).unwrap_or(checkpoint_sha256)
        ))
    }
}

/// What a finished run measured.
pub struct RunSummary {
    pub out: PathBuf,
    /// Accuracy per scoring, in the order asked.
    pub scorings: Vec<(String, results::ScoringSummary)>,
    /// Prompt tokens over all episodes (token prompts only).
    pub prompt_tokens: usize,
    pub markdown: String,
}

/// Runs (or resumes) the episodes of `cfg` and writes its result files. `llm`: the model
/// `cfg.llm` names, already loaded (a grid of runs loads it once).
pub fn execute(cfg: &RunConfig, llm: Option<&dyn LanguageModel>) -> Result<RunSummary> {
    let loaded;
    let llm: &dyn LanguageModel = match llm {
        Some(m) => m,
        None => {
            check_settings(cfg)?;
            loaded = cfg.llm.load()?;
            loaded.as_ref()
        }
    };
    let mut run = Run::open(cfg, llm)?;
    let bar = crate::progress::bar(run.episodes() as u64, "episodes");
    for i in 0..run.episodes() {
        run.step(i)?;
        bar.inc(1);
        bar.set_message(run.progress());
    }
    bar.finish_and_clear();
    run.finish()
}

/// [`execute`] for several runs on one model, episode by episode across the runs: episode i of
/// each in `cfgs`' order, then episode i + 1. Runs whose prompts share a beginning (the same
/// episode with fewer repeats of its support set is a prefix of the one with more) then
/// follow each other, and a local model reuses the prefix it just computed (for Table 1's
/// repeat columns, most of their prompts). `on_episode(c)` is called after each episode of
/// `cfgs[c]`.
pub fn execute_interleaved(
    cfgs: &[RunConfig],
    llm: &dyn LanguageModel,
    mut on_episode: impl FnMut(usize),
) -> Result<Vec<RunSummary>> {
    let mut runs = cfgs
        .iter()
        .map(|cfg| Run::open(cfg, llm))
        .collect::<Result<Vec<_>>>()?;
    let most = runs.iter().map(Run::episodes).max().unwrap_or(0);
    for i in 0..most {
        for (c, run) in runs.iter_mut().enumerate() {
            if i < run.episodes() {
                run.step(i)?;
                on_episode(c);
            }
        }
    }
    runs.into_iter().map(Run::finish).collect()
}

fn check_settings(cfg: &RunConfig) -> Result<()> {
    if cfg.way < 2 {
        bail!("--way {}: an episode needs at least 2 classes", cfg.way);
    }
    if cfg.scorings.is_empty() {
        bail!("no scoring asked for: name at least one with --scoring");
    }
    check_teacher(cfg.teacher.as_ref(), cfg.words)
}

/// `--words teacher` and `--teacher` come together, and the teacher reads a real side.
pub fn check_teacher(teacher: Option<&TeacherConfig>, words: WordSource) -> Result<()> {
    match (teacher, words) {
        (None, WordSource::Teacher) => bail!(
            "--words teacher needs --teacher SPEC: the scorer whose most relevant codebook \
             entries stand for each image"
        ),
        (Some(t), WordSource::Spae | WordSource::Oracle | WordSource::Random) => bail!(
            "--teacher {}: only --words teacher reads a teacher, not --words {}",
            t.scorer,
            words.name()
        ),
        _ => {}
    }
    if teacher.is_some_and(|t| t.image_size == Some(0)) {
        bail!("--teacher-image-size 0: the teacher needs images of at least one pixel");
    }
    Ok(())
}

/// What must match for a rerun to resume a result folder. A teacher run adds its teacher
/// (the scorer's hash with it, so a retrained teacher does not resume another's results);
/// the other runs keep the identity their folders have always had.
fn identity(
    cfg: &RunConfig,
    checkpoint_sha256: &str,
    template_sha256: &str,
    form: PromptForm,
    teacher_side: Option<usize>,
) -> Result<serde_json::Value> {
    let mut identity = serde_json::json!({
        "task": cfg.task.name,
        "data": cfg.data.as_ref().map(|d| d.display().to_string()),
        "split": cfg.split,
        "checkpoint_sha256": checkpoint_sha256,
        "llm": cfg.llm.name,
        "template_sha256": template_sha256,
        "prompt_form": format!("{form:?}").to_lowercase(),
        "seed": cfg.seed,
        "way": cfg.way,
        "shots": cfg.shots,
        "repeats": cfg.repeats,
        "induction": cfg.induction,
        "layers": cfg.layers,
        "words": cfg.words,
        "max_tokens": cfg.max_tokens,
        "content_free": CONTENT_FREE,
    });
    if let Some(names) = &cfg.task.class_names {
        identity["class_names"] = serde_json::json!(names);
    }
    if let Some(t) = &cfg.teacher {
        identity["teacher"] = t.identity(teacher_side)?;
    }
    Ok(identity)
}

/// One few-shot run, opened: its episodes, their prompts' words and its result store.
struct Run<'a> {
    cfg: &'a RunConfig,
    llm: &'a dyn LanguageModel,
    templates: Templates,
    task: Task,
    image_words: HashMap<String, ImageWords>,
    form: PromptForm,
    scoring_keys: Vec<&'static str>,
    identity: serde_json::Value,
    out: PathBuf,
    store: ResultStore<EpisodeResult>,
    rt: tokio::runtime::Runtime,
    finished: Vec<EpisodeResult>,
    asked: usize,
    primary_correct: usize,
}

impl<'a> Run<'a> {
    fn open(cfg: &'a RunConfig, llm: &'a dyn LanguageModel) -> Result<Self> {
        check_settings(cfg)?;
        let scoring_keys: Vec<&'static str> = cfg.scorings.iter().map(|s| s.key()).collect();
        let templates = match &cfg.prompts {
            Some(dir) => Templates::with_overrides(dir)?,
            None => Templates::builtin()?,
        };
        let template_hash = sha256_hex(templates.source(&cfg.task.template)?.as_bytes());
        let (spae, ckpt) = cfg.checkpoint.load(&Device::Cpu)?;
        spae.config()
            .pyramid
            .check_depth(cfg.layers)
            .with_context(|| format!("--layers {}", cfg.layers))?;
        let checkpoint_hash = cfg.checkpoint.sha256()?;
        let mc = spae.config().clone();
        let episode_cfg = EpisodeConfig {
            way: cfg.way,
            shots: cfg.shots,
            repeats: cfg.repeats,
            induction: cfg.induction,
            seed: cfg.seed,
            episodes: cfg.episodes,
        };
        let open_at = |side: usize| {
            Task::open(
                &cfg.task,
                cfg.data.as_deref(),
                &cfg.split,
                &episode_cfg,
                mc.in_channels,
                side,
            )
        };
        let task = open_at(mc.image_size)?;
        let form = PromptForm::for_llm(&cfg.llm, cfg.text_prompts)?;
        let teacher_side = cfg
            .teacher
            .as_ref()
            .map(|t| t.image_size.unwrap_or(mc.image_size));
        let identity = identity(cfg, &checkpoint_hash, &template_hash, form, teacher_side)?;
        let out = cfg
            .out
            .clone()
            .unwrap_or_else(|| cfg.default_out(&checkpoint_hash));
        let invocation = serde_json::json!({
            "checkpoint": ckpt,
            "episodes": cfg.episodes,
            "scorings": scoring_keys,
            "spae_eval_version": env!("CARGO_PKG_VERSION"),
        });
        let store: ResultStore<EpisodeResult> =
            open_results(&out, &identity, &invocation, |r: &EpisodeResult| r.episode)?;
        let records: Vec<prompt::FrozenRecord> = task
            .episodes
            .iter()
            .map(prompt::FrozenRecord::from_episode)
            .collect();
        prompt::write_frozen(&out.join("episodes.json"), &records)?;

        // The task again at the teacher's side where it is not the checkpoint's: the same
        // draw of episodes over the same images, read at the size the teacher was trained on.
        let teacher_task = match teacher_side {
            Some(side) if side != mc.image_size => {
                let t = open_at(side)?;
                if t.episodes != task.episodes {
                    bail!(
                        "--teacher-image-size {side}: task {} draws other episodes at that size",
                        cfg.task.name
                    );
                }
                Some(t)
            }
            _ => None,
        };
        let data_spec = cfg.task.data_spec(cfg.data.as_deref())?;
        let teacher = cfg
            .teacher
            .as_ref()
            .zip(teacher_side)
            .map(|(t, side)| words::Teacher {
                scorer: &t.scorer,
                data: &data_spec,
                images: teacher_task.as_ref().unwrap_or(&task),
                channels: mc.in_channels,
                image_size: side,
            });
        let image_words = words::image_words(
            &words::episode_images(&task),
            &task,
            &spae,
            cfg.layers,
            cfg.words,
            cfg.seed,
            teacher.as_ref(),
        )?;
        if form == PromptForm::Tokens {
            check_vocabulary(llm, spae.codebook())?;
        }
        Ok(Self {
            cfg,
            llm,
            templates,
            finished: Vec::with_capacity(task.episodes.len()),
            task,
            image_words,
            form,
            scoring_keys,
            identity,
            out,
            store,
            rt: crate::util::runtime()?,
            asked: 0,
            primary_correct: 0,
        })
    }

    fn episodes(&self) -> usize {
        self.task.episodes.len()
    }

    /// Episode `i`, from the result files or asked of the model (and saved).
    fn step(&mut self, i: usize) -> Result<()> {
        let ep = &self.task.episodes[i];
        let built = build_prompt(
            ep,
            &self.templates,
            &self.cfg.task.template,
            &self.image_words,
            self.form,
            self.llm,
        )
        .with_context(|| format!("episode {i}"))?;
        if i == 0 {
            // What the model reads, for a person to look at (token prompts detokenized).
            let text = match &built.prompt {
                Prompt::Text(t) => t.clone(),
                Prompt::Tokens(ids) => self.llm.detokenize(ids)?,
            };
            write_atomic(&self.out.join("prompt-episode-0.txt"), &text)?;
        }
        let keys = &self.scoring_keys;
        let done = self.store.get(i).filter(|r| {
            r.prompt_hash == built.hash && keys.iter().all(|s| r.scorings.contains_key(*s))
        });
        let mut result = match done {
            Some(r) => r.clone(),
            None => {
                let r = self
                    .rt
                    .block_on(ask(
                        self.llm,
                        i,
                        ep,
                        &built,
                        &self.cfg.scorings,
                        self.cfg.max_tokens,
                    ))
                    .with_context(|| {
                        format!(
                            "episode {i} (the {} finished before it are saved in {}; rerun the same command to resume)",
                            self.asked,
                            self.out.display()
                        )
                    })?;
                self.store.append(r.clone())?;
                self.asked += 1;
                r
            }
        };
        set_primary(&mut result, self.scoring_keys[0]);
        self.primary_correct += result.correct as usize;
        self.finished.push(result);
        Ok(())
    }

    /// The primary scoring's accuracy so far, for a progress bar.
    fn progress(&self) -> String {
        format!(
            "{} {:.1}%",
            self.scoring_keys[0],
            100.0 * self.primary_correct as f64 / self.finished.len().max(1) as f64
        )
    }

    /// Writes the summary files of the episodes stepped through.
    fn finish(self) -> Result<RunSummary> {
        let (cfg, finished, out) = (self.cfg, self.finished, self.out);
        tracing::info!(
            "{} episodes: {} asked, {} resumed from {}",
            finished.len(),
            self.asked,
            finished.len() - self.asked,
            out.display()
        );
        let refs: Vec<&EpisodeResult> = finished.iter().collect();
        let (rows, bias) = results::summarize(&refs, &self.scoring_keys);
        let title = format!(
            "spae-icl run: {}, {}-way {}-shot, repeats {}, {}induction, {} layers, {} words{}, {}",
            cfg.task.name,
            cfg.way,
            cfg.shots,
            cfg.repeats,
            if cfg.induction { "" } else { "no " },
            cfg.layers,
            cfg.words.name(),
            cfg.teacher
                .as_ref()
                .map_or(String::new(), |t| format!(" of {}", t.scorer)),
            cfg.llm.name
        );
        let md = results::markdown(&title, &rows, bias.as_deref());
        let summary = serde_json::json!({
            "identity": self.identity,
            "episodes": finished.len(),
            "primary": self.scoring_keys[0],
            "scorings": rows.iter().map(|(k, v)| Ok((k.clone(), serde_json::to_value(v)?))).collect::<Result<serde_json::Map<_, _>>>()?,
            "content_free_p_by_position": bias,
        });
        write_atomic(
            &out.join("summary.json"),
            &serde_json::to_string_pretty(&summary)?,
        )?;
        write_atomic(&out.join("summary.md"), &md)?;
        Ok(RunSummary {
            out,
            scorings: rows,
            prompt_tokens: finished.iter().filter_map(|r| r.prompt_tokens).sum(),
            markdown: md,
        })
    }
}

/// The record's `prediction` and `correct` follow the run's first scoring.
fn set_primary(r: &mut EpisodeResult, primary: &str) {
    if let Some(s) = r.scorings.get(primary) {
        r.prediction = s.prediction.clone();
        r.correct = s.correct;
    }
}

struct BuiltPrompt {
    prompt: Prompt,
    /// The same prompt with a content-free query, for calibration.
    content_free: Prompt,
    hash: String,
    tokens: Option<usize>,
}

fn build_prompt(
    ep: &Episode,
    templates: &Templates,
    template: &str,
    image_words: &HashMap<String, ImageWords>,
    form: PromptForm,
    llm: &dyn LanguageModel,
) -> Result<BuiltPrompt> {
    // Each image becomes a slot; slot k is the k-th image the context names.
    let mut slots: Vec<&ImageWords> = Vec::new();
    let ctx = FewShotContext::from_episode(ep, |image| {
        let words = image_words.get(image);
        slots.push(words.unwrap_or(&EMPTY));
        prompt::image_slot(slots.len() - 1)
    });
    for shot in ep.support.iter().chain([&ep.query]) {
        if !image_words.contains_key(&shot.image) {
            bail!("no words for image {}", shot.image);
        }
    }
    let rendered = templates.render(template, &ctx)?;
    let cf_slot = prompt::image_slot(usize::MAX);
    let cf_rendered = templates.render(template, &ctx.with_content_free_query(&cf_slot))?;
    let prompt = assemble(&rendered, &slots, form, llm)?;
    let content_free = assemble(&cf_rendered, &slots, form, llm)?;
    let mut h = Sha256::new();
    let tokens = match &prompt {
        Prompt::Tokens(ids) => {
            h.update(b"tokens:");
            for id in ids {
                h.update(id.to_le_bytes());
            }
            Some(ids.len())
        }
        Prompt::Text(t) => {
            h.update(b"text:");
            h.update(t.as_bytes());
            None
        }
    };
    Ok(BuiltPrompt {
        prompt,
        content_free,
        hash: hex::encode(&h.finalize()[..16]),
        tokens,
    })
}

static EMPTY: ImageWords = ImageWords {
    words: Vec::new(),
    token_ids: Vec::new(),
};

/// Text segments through the model's tokenizer, image slots as their exact ids (or text);
/// slot `usize::MAX` is the content-free query, always text.
pub fn assemble(
    rendered: &str,
    slots: &[&ImageWords],
    form: PromptForm,
    llm: &dyn LanguageModel,
) -> Result<Prompt> {
    let segments = prompt::split_slots(rendered)?;
    let image = |k: usize| -> Result<&ImageWords> {
        slots
            .get(k)
            .copied()
            .with_context(|| format!("template used image slot {k} of {}", slots.len()))
    };
    Ok(match form {
        PromptForm::Text => {
            let mut text = String::new();
            for seg in segments {
                match seg {
                    Segment::Text(t) => text.push_str(t),
                    Segment::Image(usize::MAX) => text.push_str(CONTENT_FREE),
                    Segment::Image(k) => text.push_str(&image(k)?.text()),
                }
            }
            Prompt::Text(text)
        }
        PromptForm::Tokens => {
            let mut ids: Vec<u32> = llm.bos_token().into_iter().collect();
            for seg in segments {
                match seg {
                    Segment::Text(t) => ids.extend(llm.tokenize(t)?),
                    Segment::Image(usize::MAX) => ids.extend(llm.tokenize(CONTENT_FREE)?),
                    Segment::Image(k) => ids.extend(&image(k)?.token_ids),
                }
            }
            Prompt::Tokens(ids)
        }
    })
}

async fn ask(
    llm: &dyn LanguageModel,
    index: usize,
    ep: &Episode,
    built: &BuiltPrompt,
    scorings: &[Scoring],
    max_tokens: usize,
) -> Result<EpisodeResult> {
    let answer = ep.answer().to_string();
    // The template ends "This is a", so each name follows a space.
    let names: Vec<String> = ep.classes.iter().map(|c| format!(" {c}")).collect();
    let mut name_logprobs: Option<Vec<f32>> = None;
    let mut out = std::collections::BTreeMap::new();
    let pick = |idx: usize| -> (String, bool) {
        let p = ep.classes[idx].clone();
        let ok = p == answer;
        (p, ok)
    };
    for &s in scorings {
        let r = match s {
            Scoring::Open => {
                let params = GenerateParams {
                    max_tokens,
                    stop: vec!["\n".into(), ".".into()],
                    ..GenerateParams::default()
                };
                let c = llm.generate(&built.prompt, &params).await?;
                ScoringResult {
                    prediction: prompt::parse_answer(&c.text),
                    correct: prompt::exact_match(&c.text, &answer),
                    output: Some(c.text),
                    logprobs: None,
                    content_free_logprobs: None,
                }
            }
            Scoring::Constrained | Scoring::Calibrated => {
                if name_logprobs.is_none() {
                    name_logprobs = Some(llm.score(&built.prompt, &names).await?);
                }
                let lp = name_logprobs.clone().unwrap_or_default();
                let (scores, cf) = if s == Scoring::Calibrated {
                    let cf = llm.score(&built.content_free, &names).await?;
                    (prompt::calibrate(&lp, &cf)?, Some(cf))
                } else {
                    (lp.clone(), None)
                };
                let (prediction, correct) = pick(prompt::constrained_choice(&scores)?);
                ScoringResult {
                    prediction,
                    correct,
                    output: None,
                    logprobs: Some(lp),
                    content_free_logprobs: cf,
                }
            }
            Scoring::ConstrainedDecoding => {
                let idx = constrained_decode(llm, &built.prompt, &names).await?;
                let (prediction, correct) = pick(idx);
                ScoringResult {
                    prediction,
                    correct,
                    output: None,
                    logprobs: None,
                    content_free_logprobs: None,
                }
            }
        };
        out.insert(s.key().to_string(), r);
    }
    let mut result = EpisodeResult {
        episode: index,
        prompt_hash: built.hash.clone(),
        prediction: String::new(),
        answer,
        correct: false,
        classes: ep.classes.clone(),
        query: ep.query.image.clone(),
        prompt_tokens: built.tokens,
        scorings: out,
    };
    set_primary(&mut result, scorings[0].key());
    Ok(result)
}

/// Greedy decoding restricted, token by token, to continuations of the candidates: at each
/// step the model chooses among the next tokens of the names still possible; a name already
/// complete competes by the probability of the "." that ends a support line.
async fn constrained_decode(
    llm: &dyn LanguageModel,
    prompt: &Prompt,
    names: &[String],
) -> Result<usize> {
    let tokenized: Vec<Vec<u32>> = names
        .iter()
        .map(|n| llm.tokenize(n))
        .collect::<llm_client::Result<_>>()?;
    let mut alive: Vec<usize> = (0..names.len()).collect();
    let mut prefix: Vec<u32> = Vec::new();
    loop {
        if alive.len() == 1 {
            return Ok(alive[0]);
        }
        let depth = prefix.len();
        let complete = alive.iter().copied().find(|&i| tokenized[i].len() == depth);
        let mut next: Vec<u32> = alive
            .iter()
            .filter_map(|&i| tokenized[i].get(depth).copied())
            .collect();
        next.sort_unstable();
        next.dedup();
        if next.is_empty() {
            // Several names tokenize identically: the first wins, as in constrained_choice.
            return Ok(alive[0]);
        }
        if next.len() == 1 && complete.is_none() {
            prefix.push(next[0]);
            alive.retain(|&i| tokenized[i].get(depth) == Some(&next[0]));
            continue;
        }
        let mut options: Vec<String> = next
            .iter()
            .map(|&t| llm.detokenize(&[t]))
            .collect::<llm_client::Result<_>>()?;
        if complete.is_some() {
            options.push(".".into());
        }
        let extended = match prompt {
            Prompt::Tokens(ids) => Prompt::Tokens(ids.iter().chain(&prefix).copied().collect()),
            Prompt::Text(t) => Prompt::Text(format!("{t}{}", llm.detokenize(&prefix)?)),
        };
        let scores = llm.score(&extended, &options).await?;
        let best = prompt::constrained_choice(&scores)?;
        if best == next.len() {
            if let Some(c) = complete {
                return Ok(c);
            }
        }
        let t = next[best.min(next.len() - 1)];
        prefix.push(t);
        alive.retain(|&i| tokenized[i].get(depth) == Some(&t));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_out_names_every_setting() {
        let mut cfg = RunConfig::for_task(TaskSpec::resolve("fashion-mnist").unwrap());
        cfg.way = 5;
        cfg.shots = 3;
        cfg.induction = false;
        cfg.llm = LlmConfig::named("openai-compatible:http://h:1/v1#m");
        assert_eq!(
            cfg.default_out("414ea9e04a1f0000"),
            Path::new("runs/fashion-mnist/spae-5way-3shot-r0-noind-L2-seed0-openai-compatible_http___h_1_v1_m-ckpt414ea9e0")
        );
        assert_eq!(cfg.scorings, vec![Scoring::Open, Scoring::Constrained]);
    }

    #[test]
    fn a_run_without_a_teacher_serialises_and_is_identified_as_before() {
        let cfg = RunConfig::for_task(TaskSpec::resolve("fashion-mnist").unwrap());
        let keys = |v: &serde_json::Value| {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        let sorted = |k: &[&str]| {
            let mut k: Vec<String> = k.iter().map(|s| s.to_string()).collect();
            k.sort();
            k
        };
        let json = serde_json::to_value(&cfg).unwrap();
        assert_eq!(
            keys(&json),
            sorted(&[
                "task",
                "data",
                "split",
                "checkpoint",
                "llm",
                "way",
                "shots",
                "repeats",
                "induction",
                "episodes",
                "seed",
                "layers",
                "words",
                "scorings",
                "prompts",
                "text_prompts",
                "max_tokens",
                "out"
            ])
        );
        assert_eq!(serde_json::from_value::<RunConfig>(json).unwrap(), cfg);
        let id = identity(&cfg, "c", "t", PromptForm::Tokens, None).unwrap();
        assert_eq!(
            keys(&id),
            sorted(&[
                "task",
                "data",
                "split",
                "checkpoint_sha256",
                "llm",
                "template_sha256",
                "prompt_form",
                "seed",
                "way",
                "shots",
                "repeats",
                "induction",
                "layers",
                "words",
                "max_tokens",
                "content_free"
            ])
        );
    }

    #[test]
    fn a_teacher_run_names_its_teacher_and_its_hash() {
        let mut cfg = RunConfig::for_task(TaskSpec::resolve("fashion-mnist").unwrap());
        cfg.words = WordSource::Teacher;
        cfg.teacher = Some(TeacherConfig {
            scorer: "default".into(),
            image_size: None,
        });
        check_settings(&cfg).unwrap();
        let json = serde_json::to_value(&cfg).unwrap();
        assert_eq!(json["words"], "teacher");
        assert_eq!(json["teacher"], serde_json::json!({"scorer": "default"}));
        let id = identity(&cfg, "c", "t", PromptForm::Tokens, Some(28)).unwrap();
        assert_eq!(id["teacher"]["scorer"], "default");
        assert_eq!(id["teacher"]["image_size"], 28);
        assert_eq!(
            id["teacher"]["scorer_sha256"],
            crate::scorer::scorer_sha256("default").unwrap()
        );
        let out = cfg.default_out("414ea9e0");
        let dir = out.file_name().unwrap().to_string_lossy();
        assert!(dir.starts_with("teacher-2way-"), "{dir}");
    }

    #[test]
    fn teacher_words_need_a_teacher_and_a_teacher_needs_its_words() {
        let mut cfg = RunConfig::for_task(TaskSpec::resolve("fashion-mnist").unwrap());
        cfg.words = WordSource::Teacher;
        let err = check_settings(&cfg).unwrap_err().to_string();
        assert!(err.contains("--words teacher needs --teacher"), "{err}");

        cfg.words = WordSource::Oracle;
        cfg.teacher = Some(TeacherConfig {
            scorer: "conse".into(),
            image_size: Some(64),
        });
        let err = check_settings(&cfg).unwrap_err().to_string();
        assert!(
            err.contains("--teacher conse") && err.contains("--words oracle"),
            "{err}"
        );

        cfg.words = WordSource::Teacher;
        cfg.teacher = Some(TeacherConfig {
            scorer: "conse".into(),
            image_size: Some(0),
        });
        let err = check_settings(&cfg).unwrap_err().to_string();
        assert!(err.contains("--teacher-image-size 0"), "{err}");
    }
}
