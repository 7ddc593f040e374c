//! `spae-icl run`: few-shot classification by a frozen LLM that reads SPAE image words, with
//! the episodes of Frozen (Tsimpoukelli et al. 2021; SPAE.md section 6).
//!
//! Images become the words of their first `--layers` pyramid layers; each episode's prompt is
//! rendered from `prompts/few_shot_classification.tera` with an image slot per image; a local
//! model reads the image words as their exact token ids, an API model as text. Results go to
//! `--out` as they finish, so a rerun asks only for the episodes still missing.

pub mod results;
pub mod task;
pub mod words;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Device;
use llm_client::{GenerateParams, LanguageModel, ModelSpec, Prompt};
use prompt::{Episode, FewShotContext, Segment, Templates};
use sha2::{Digest, Sha256};
use spae_core::Codebook;

use crate::cli::{RunArgs, Scoring};
use results::{EpisodeResult, ResultStore, ScoringResult};
use task::Task;
use words::ImageWords;

const TEMPLATE: &str = "few_shot_classification";
/// The content-free query of contextual calibration (Zhao et al. 2021).
pub const CONTENT_FREE: &str = "N/A";

/// How image words reach the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptForm {
    /// Exact token ids (local models): the words are never re-tokenized.
    Tokens,
    /// Text (API models, or --text-prompts).
    Text,
}

pub fn run(args: RunArgs) -> Result<()> {
    let summary = execute(&args, None)?;
    println!("{}", summary.markdown);
    println!("results: {}", summary.out.display());
    Ok(())
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

/// Runs (or resumes) the episodes of `args` and writes its result files. `llm`: the model
/// `args.llm` names, already loaded (a grid of runs loads it once).
pub fn execute(args: &RunArgs, llm: Option<&dyn LanguageModel>) -> Result<RunSummary> {
    if args.way < 2 {
        bail!("--way {}: an episode needs at least 2 classes", args.way);
    }
    let scorings = args.scorings();
    let scoring_keys: Vec<&str> = scorings.iter().map(|s| s.key()).collect();
    let templates = match &args.prompts {
        Some(dir) => Templates::with_overrides(dir)?,
        None => Templates::builtin()?,
    };
    let template_hash = sha256_hex(templates.source(TEMPLATE)?.as_bytes());
    let (spae, ckpt) = crate::tokens::load_checkpoint(&args.ckpt, &Device::Cpu)?;
    spae.config()
        .pyramid
        .check_depth(args.layers)
        .with_context(|| format!("--layers {}", args.layers))?;
    let checkpoint_hash = crate::tokens::checkpoint_sha256(&args.ckpt)?;
    let cfg = spae.config().clone();
    let task = Task::open(args, cfg.in_channels, cfg.image_size)?;

    let spec = ModelSpec::parse(&args.llm).with_context(|| format!("--llm {}", args.llm))?;
    let local = matches!(spec, ModelSpec::Local(_) | ModelSpec::Gguf(_));
    let form = if local && !args.text_prompts {
        PromptForm::Tokens
    } else {
        PromptForm::Text
    };
    let identity = serde_json::json!({
        "task": task::task_name(args.task),
        "data": args.data.as_ref().map(|d| d.display().to_string()),
        "split": args.split,
        "checkpoint_sha256": checkpoint_hash,
        "llm": args.llm,
        "template_sha256": template_hash,
        "prompt_form": format!("{form:?}").to_lowercase(),
        "seed": args.seed,
        "way": args.way,
        "shots": args.shots,
        "repeats": args.repeats,
        "induction": args.induction(),
        "layers": args.layers,
        "words": args.words,
        "max_tokens": args.max_tokens,
        "content_free": CONTENT_FREE,
    });
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(args, &checkpoint_hash));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let invocation = serde_json::json!({
        "checkpoint": ckpt,
        "episodes": args.episodes,
        "scorings": scoring_keys,
        "spae_icl_version": env!("CARGO_PKG_VERSION"),
    });
    results::check_identity(&out, &identity, &invocation)?;
    let records: Vec<prompt::FrozenRecord> = task
        .episodes
        .iter()
        .map(prompt::FrozenRecord::from_episode)
        .collect();
    prompt::write_frozen(&out.join("episodes.json"), &records)?;

    let image_words = words::image_words(&task, &spae, args.layers, args.words, args.seed)?;
    let loaded;
    let llm: &dyn LanguageModel = match llm {
        Some(m) => m,
        None => {
            loaded = crate::llm::load(&args.llm, &args.api)?;
            loaded.as_ref()
        }
    };
    if form == PromptForm::Tokens {
        check_vocabulary(llm, spae.codebook())?;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;

    let mut store = ResultStore::open(&out.join("results.jsonl"))?;
    let bar = crate::progress::bar(task.episodes.len() as u64, "episodes");
    let mut finished: Vec<EpisodeResult> = Vec::with_capacity(task.episodes.len());
    let (mut asked, mut primary_correct) = (0usize, 0usize);
    for (i, ep) in task.episodes.iter().enumerate() {
        let built = build_prompt(ep, &templates, &image_words, form, llm)
            .with_context(|| format!("episode {i}"))?;
        if i == 0 {
            // What the model reads, for a person to look at (token prompts detokenized).
            let text = match &built.prompt {
                Prompt::Text(t) => t.clone(),
                Prompt::Tokens(ids) => llm.detokenize(ids)?,
            };
            results::write_atomic(&out.join("prompt-episode-0.txt"), &text)?;
        }
        let mut result = match store.finished(i, &built.hash, &scoring_keys) {
            Some(r) => r.clone(),
            None => {
                let r = rt
                    .block_on(ask(llm, i, ep, &built, &scorings, args.max_tokens))
                    .with_context(|| {
                        format!(
                            "episode {i} (the {asked} finished before it are saved in {}; rerun the same command to resume)",
                            out.display()
                        )
                    })?;
                store.append(&r)?;
                asked += 1;
                r
            }
        };
        set_primary(&mut result, scoring_keys[0]);
        primary_correct += result.correct as usize;
        finished.push(result);
        bar.inc(1);
        bar.set_message(format!(
            "{} {:.1}%",
            scoring_keys[0],
            100.0 * primary_correct as f64 / finished.len() as f64
        ));
    }
    bar.finish_and_clear();
    tracing::info!(
        "{} episodes: {asked} asked, {} resumed from {}",
        finished.len(),
        finished.len() - asked,
        out.display()
    );

    let refs: Vec<&EpisodeResult> = finished.iter().collect();
    let (rows, bias) = results::summarize(&refs, &scoring_keys);
    let title = format!(
        "spae-icl run: {}, {}-way {}-shot, repeats {}, {}induction, {} layers, {} words, {}",
        task::task_name(args.task),
        args.way,
        args.shots,
        args.repeats,
        if args.induction() { "" } else { "no " },
        args.layers,
        serde_json::to_value(args.words)?.as_str().unwrap_or("?"),
        args.llm
    );
    let md = results::markdown(&title, &rows, bias.as_deref());
    let summary = serde_json::json!({
        "identity": identity,
        "episodes": finished.len(),
        "primary": scoring_keys[0],
        "scorings": rows.iter().map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or_default())).collect::<serde_json::Map<_, _>>(),
        "content_free_p_by_position": bias,
    });
    results::write_atomic(
        &out.join("summary.json"),
        &serde_json::to_string_pretty(&summary)?,
    )?;
    results::write_atomic(&out.join("summary.md"), &md)?;
    Ok(RunSummary {
        out,
        scorings: rows,
        prompt_tokens: finished.iter().filter_map(|r| r.prompt_tokens).sum(),
        markdown: md,
    })
}

/// `runs/<task>/<settings>`: one directory per setting, so reruns resume and settings never mix.
/// The settings name the tokenizer by its checkpoint's hash, so a new checkpoint (a new built-in
/// one after an upgrade) starts its own directory instead of meeting the old one's results.
fn default_out(args: &RunArgs, checkpoint_sha256: &str) -> PathBuf {
    let llm = slug(&args.llm);
    let words = serde_json::to_value(args.words)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    Path::new("runs")
        .join(task::task_name(args.task))
        .join(format!(
            "{words}-{}way-{}shot-r{}-{}-L{}-seed{}-{llm}-ckpt{}",
            args.way,
            args.shots,
            args.repeats,
            if args.induction() { "ind" } else { "noind" },
            args.layers,
            args.seed,
            checkpoint_sha256.get(..8).unwrap_or(checkpoint_sha256)
        ))
}

/// `s` as a file name: ASCII letters, digits and '-' kept, anything else '_'.
/// This process's arguments after `command`, as a result file quotes what wrote it.
pub fn invocation(command: &str) -> String {
    std::env::args()
        .skip_while(|a| a != command)
        .skip(1)
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
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
    let rendered = templates.render(TEMPLATE, &ctx)?;
    let cf_slot = prompt::image_slot(usize::MAX);
    let cf_rendered = templates.render(TEMPLATE, &ctx.with_content_free_query(&cf_slot))?;
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

/// A local model reads image words as token ids, so the checkpoint's codebook must come from
/// this model's vocabulary: sample entries and check each is the single token the model gives
/// its word.
pub fn check_vocabulary(llm: &dyn LanguageModel, codebook: &Codebook) -> Result<()> {
    let n = codebook.len();
    let step = (n / 32).max(1);
    let (mut agree, mut total) = (0usize, 0usize);
    for i in (0..n).step_by(step).take(32) {
        total += 1;
        let ids = llm.tokenize(&format!(" {}", codebook.word(i)))?;
        agree += (ids == [codebook.token_ids()[i]]) as usize;
    }
    if agree * 10 < total * 9 {
        bail!(
            "the checkpoint's codebook was read from {} but {} gives only {agree} of {total} sampled \
             codebook words the same single token id, so the image token ids would be wrong: use a \
             checkpoint built on this LLM's vocabulary, or --text-prompts",
            codebook.info().source,
            llm.name()
        );
    }
    Ok(())
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

pub fn sha256_file(path: &Path) -> Result<String> {
    Ok(sha256_hex(
        &std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
    ))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_out_names_every_setting() {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from([
            "spae-icl",
            "run",
            "--task",
            "fashion-mnist",
            "--way",
            "5",
            "--shots",
            "3",
            "--no-induction",
            "--llm",
            "openai-compatible:http://h:1/v1#m",
        ])
        .unwrap();
        let crate::cli::Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(
            default_out(&args, "414ea9e04a1f0000"),
            Path::new("runs/fashion-mnist/spae-5way-3shot-r0-noind-L2-seed0-openai-compatible_http___h_1_v1_m-ckpt414ea9e0")
        );
        assert_eq!(args.scorings(), vec![Scoring::Open, Scoring::Constrained]);
    }

    #[test]
    fn shorthands_put_their_scoring_first() {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from([
            "spae-icl",
            "run",
            "--calibrate",
            "--constrained",
            "--scoring",
            "open,constrained-decoding",
        ])
        .unwrap();
        let crate::cli::Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(
            args.scorings(),
            vec![
                Scoring::Calibrated,
                Scoring::Constrained,
                Scoring::Open,
                Scoring::ConstrainedDecoding
            ]
        );
    }
}
