//! `spae-icl generate`: a frozen LLM draws. Given labelled examples "<label>:<image words>"
//! from a training split, the model writes the words of a new image of the requested class,
//! one pyramid layer at a time ("progressive in-context decoding", SPAE.md section 6): layer 1
//! with the examples' layer 1 in context, then layer 2 given its own layer 1 and the examples'
//! layers 1-2, and so on. The decoder turns the words into pixels.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use llm_client::{GenerateParams, LanguageModel, ModelSpec};
use prompt::{GenerationContext, GenerationExample, Templates, WordIndex};
use rand::rngs::StdRng;
use rand::seq::index;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use spae_core::TokenPyramid;
use spae_datasets::Split;

use crate::cli::GenerateArgs;
use crate::run::words::ImageWords;
use crate::run::{assemble, PromptForm};

const TEMPLATE: &str = "generation";

/// What one generated image is made of, written beside the PNG.
#[derive(Debug, Serialize)]
struct Generated {
    class: String,
    /// Words per pyramid layer, coarse first.
    layers: Vec<Vec<String>>,
    /// Training-split indices of the in-context examples.
    examples: Vec<usize>,
    /// Words the model wrote that are codebook entries / mapped by prefix / unknown, and
    /// entries drawn at random to fill a layer the model left short.
    exact: usize,
    by_prefix: usize,
    unknown: Vec<String>,
    filled_at_random: usize,
}

pub fn generate(args: GenerateArgs) -> Result<()> {
    let (spae, ckpt) = crate::tokens::load_checkpoint(&args.ckpt, &Device::Cpu)?;
    let cfg = spae.config().clone();
    let depth = args.layers.unwrap_or(cfg.pyramid.depth());
    cfg.pyramid
        .check_depth(depth)
        .with_context(|| format!("--layers {depth}"))?;
    let data = crate::train::load_data(&args.data, Split::Train, cfg.in_channels, cfg.image_size)?;
    let class = resolve_class(&args.class, &data.class_names)?;
    if args.shots == 0 || args.shots > data.len() {
        bail!(
            "--shots {}: between 1 and {} examples",
            args.shots,
            data.len()
        );
    }
    let templates = match &args.prompts {
        Some(dir) => Templates::with_overrides(dir)?,
        None => Templates::builtin()?,
    };
    let spec = ModelSpec::parse(&args.llm).with_context(|| format!("--llm {}", args.llm))?;
    let form = if matches!(spec, ModelSpec::Local(_) | ModelSpec::Gguf(_)) {
        PromptForm::Tokens
    } else {
        PromptForm::Text
    };
    let llm = crate::llm::load(&args.llm, &args.api)?;
    let codebook = spae.codebook();
    if form == PromptForm::Tokens {
        crate::run::check_vocabulary(llm.as_ref(), codebook)?;
    }
    let words: Vec<&str> = (0..codebook.len()).map(|i| codebook.word(i)).collect();
    let word_index = WordIndex::new(&words);
    let entry_of_token: HashMap<u32, usize> = codebook
        .token_ids()
        .iter()
        .enumerate()
        .map(|(i, &t)| (t, i))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;

    let bar = crate::progress::bar(args.count as u64, "images");
    let mut outputs = Vec::new();
    let mut pyramids = Vec::new();
    for n in 0..args.count {
        let seed = args.seed.wrapping_add(n as u64);
        let mut rng = StdRng::seed_from_u64(seed);
        let picked = index::sample(&mut rng, data.len(), args.shots).into_vec();
        let examples = spae.tokenize(&data.batch(&picked, &Device::Cpu)?, depth)?;
        let mut written: Vec<Vec<usize>> = Vec::new();
        let mut record = Generated {
            class: data.class_names[class].clone(),
            layers: Vec::new(),
            examples: picked.clone(),
            exact: 0,
            by_prefix: 0,
            unknown: Vec::new(),
            filled_at_random: 0,
        };
        for layer in 0..depth {
            // The examples up to this layer, then the layers written so far.
            let mut slots: Vec<ImageWords> =
                examples.iter().map(|p| words_up_to(p, layer + 1)).collect();
            slots.push(entries_as_words(
                codebook,
                written.iter().flatten().copied(),
            ));
            let ctx = GenerationContext {
                examples: picked
                    .iter()
                    .enumerate()
                    .map(|(k, &i)| GenerationExample {
                        label: data.class_names[data.labels[i] as usize].clone(),
                        image: prompt::image_slot(k),
                    })
                    .collect(),
                label: data.class_names[class].clone(),
                prefix: prompt::image_slot(args.shots),
            };
            let rendered = templates.render(TEMPLATE, &ctx)?;
            let refs: Vec<&ImageWords> = slots.iter().collect();
            let prompt = assemble(&rendered, &refs, form, llm.as_ref())?;
            let want = cfg.pyramid.layer_len(layer);
            let params = match form {
                // Exactly `want` tokens, each a codebook entry.
                PromptForm::Tokens if !args.unconstrained => GenerateParams {
                    max_tokens: want,
                    temperature: args.temperature,
                    seed: seed.wrapping_mul(31).wrapping_add(layer as u64),
                    allowed_tokens: Some(codebook.token_ids().to_vec()),
                    ..GenerateParams::default()
                },
                _ => GenerateParams {
                    max_tokens: want * 3 + 4,
                    temperature: args.temperature,
                    seed: seed.wrapping_mul(31).wrapping_add(layer as u64),
                    stop: vec!["\n".into()],
                    ..GenerateParams::default()
                },
            };
            let completion = rt
                .block_on(llm.generate(&prompt, &params))
                .with_context(|| format!("image {n}, layer {}", layer + 1))?;
            let mut entries: Vec<usize> = if params.allowed_tokens.is_some() {
                record.exact += completion.tokens.len();
                completion
                    .tokens
                    .iter()
                    .filter_map(|t| entry_of_token.get(t).copied())
                    .collect()
            } else {
                let mapped = word_index.map_text(&completion.text);
                record.exact += mapped.exact;
                record.by_prefix += mapped.by_prefix;
                record.unknown.extend(mapped.unknown);
                mapped.entries
            };
            entries.truncate(want);
            while entries.len() < want {
                entries.push(rng.gen_range(0..codebook.len()));
                record.filled_at_random += 1;
            }
            record.layers.push(
                entries
                    .iter()
                    .map(|&i| codebook.word(i).to_string())
                    .collect(),
            );
            written.push(entries);
        }
        let flat: Vec<&str> = record.layers.iter().flatten().map(String::as_str).collect();
        let sides: Vec<usize> = (0..depth).map(|l| cfg.pyramid.side(l)).collect();
        pyramids.push(TokenPyramid::from_words(&flat, codebook, &sides)?);
        outputs.push(record);
        bar.inc(1);
    }
    bar.finish_and_clear();

    let images = spae.detokenize(&pyramids)?;
    spae_core::imageio::save_png(&images, &args.output)?;
    let json_path = args.output.with_extension("json");
    let doc = serde_json::json!({
        "checkpoint": ckpt,
        "llm": args.llm,
        "class": data.class_names[class],
        "shots": args.shots,
        "layers": depth,
        "temperature": args.temperature,
        "seed": args.seed,
        "constrained_to_codebook": form == PromptForm::Tokens && !args.unconstrained,
        "images": outputs,
    });
    crate::run::results::write_atomic(&json_path, &serde_json::to_string_pretty(&doc)?)?;
    let unknown: usize = outputs.iter().map(|o| o.unknown.len()).sum();
    let filled: usize = outputs.iter().map(|o| o.filled_at_random).sum();
    eprintln!(
        "wrote {} ({} image(s) of {}) and {}; unknown words: {unknown}, filled at random: {filled}",
        args.output.display(),
        args.count,
        data.class_names[class],
        json_path.display()
    );
    Ok(())
}

/// The words and token ids of a pyramid's first `layers` layers.
fn words_up_to(p: &TokenPyramid, layers: usize) -> ImageWords {
    let (mut words, mut token_ids) = (Vec::new(), Vec::new());
    for l in p.layers.iter().take(layers) {
        words.extend(l.words.iter().cloned());
        token_ids.extend(l.token_ids.iter().copied());
    }
    ImageWords { words, token_ids }
}

fn entries_as_words(
    codebook: &spae_core::Codebook,
    entries: impl Iterator<Item = usize>,
) -> ImageWords {
    let (words, token_ids) = entries
        .map(|i| (codebook.word(i).to_string(), codebook.token_ids()[i]))
        .unzip();
    ImageWords { words, token_ids }
}

/// A class by name ("seven", case-insensitive) or by index ("7").
fn resolve_class(arg: &str, names: &[String]) -> Result<usize> {
    if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(arg)) {
        return Ok(i);
    }
    match arg.parse::<usize>() {
        Ok(i) if i < names.len() => Ok(i),
        _ => bail!(
            "--class {arg}: not one of {} (or 0-{})",
            names.join(", "),
            names.len() - 1
        ),
    }
}
