//! `spae-icl generate`: a frozen LLM draws. Given labelled examples "<label>:<image words>"
//! from a training split, the model writes the words of new images of the requested class,
//! one pyramid layer at a time ("progressive in-context decoding", SPAE.md section 6): layer 1
//! with the examples' layer 1 in context, then layer 2 given its own layer 1 and the examples'
//! layers 1-2, and so on. The decoder turns the words into pixels.
//!
//! `spae-icl eval-generate` scores that against an independent judge (`judge.rs`), beside two
//! baselines drawn in the same run: random codebook words, and a copy of an in-context example.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use llm_client::{GenerateParams, LanguageModel, ModelSpec};
use prompt::{GenerationContext, GenerationExample, Templates, WordIndex};
use rand::rngs::StdRng;
use rand::seq::index;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use spae_core::{SpaeModel, TokenPyramid};
use spae_datasets::{LabeledImages, Split};

use crate::cli::{EvalGenerateArgs, ExampleOrder, GenerateArgs};
use crate::run::words::ImageWords;
use crate::run::{assemble, PromptForm};

const TEMPLATE: &str = "generation";

/// What one generated image is made of, written beside the PNG.
#[derive(Debug, Clone, Serialize)]
pub struct Generated {
    pub class: String,
    /// Words per pyramid layer, coarse first.
    pub layers: Vec<Vec<String>>,
    /// Codebook entries per layer.
    #[serde(skip)]
    pub entries: Vec<Vec<usize>>,
    /// Words the model wrote that are codebook entries / mapped by prefix / unknown, and
    /// entries drawn at random to fill a layer the model left short.
    pub exact: usize,
    pub by_prefix: usize,
    pub unknown: Vec<String>,
    pub filled_at_random: usize,
}

/// A frozen LLM and a tokenizer, set up to write images.
pub struct Generator {
    pub spae: SpaeModel,
    pub checkpoint: String,
    llm: Box<dyn LanguageModel>,
    templates: Templates,
    form: PromptForm,
    constrained: bool,
    temperature: f32,
    word_index: WordIndex,
    entry_of_token: HashMap<u32, usize>,
    rt: tokio::runtime::Runtime,
}

impl Generated {
    /// Nothing written yet, for an image of `class`.
    pub fn empty(class: &str) -> Self {
        Self {
            class: class.to_string(),
            layers: Vec::new(),
            entries: Vec::new(),
            exact: 0,
            by_prefix: 0,
            unknown: Vec::new(),
            filled_at_random: 0,
        }
    }
}

impl Generator {
    pub fn templates(&self) -> &Templates {
        &self.templates
    }

    /// The LLM the generator asks.
    pub fn llm(&self) -> &dyn LanguageModel {
        self.llm.as_ref()
    }

    /// How image words reach the LLM (token ids for a local model, text for an API).
    pub fn form(&self) -> PromptForm {
        self.form
    }

    /// Run one LLM call to completion.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    pub fn new(
        ckpt: &crate::cli::CheckpointArg,
        llm_name: &str,
        api: &crate::cli::ApiArgs,
        prompts: Option<&std::path::Path>,
        temperature: f32,
        unconstrained: bool,
    ) -> Result<Self> {
        Self::new_with_default(
            ckpt,
            crate::tokens::BuiltIn::MnistFashion,
            llm_name,
            api,
            prompts,
            temperature,
            unconstrained,
        )
    }

    /// As [`Generator::new`], with `builtin` as the checkpoint when none is given.
    pub fn new_with_default(
        ckpt: &crate::cli::CheckpointArg,
        builtin: crate::tokens::BuiltIn,
        llm_name: &str,
        api: &crate::cli::ApiArgs,
        prompts: Option<&std::path::Path>,
        temperature: f32,
        unconstrained: bool,
    ) -> Result<Self> {
        let (spae, checkpoint) = crate::tokens::load_checkpoint_or(ckpt, builtin, &Device::Cpu)?;
        let templates = match prompts {
            Some(dir) => Templates::with_overrides(dir)?,
            None => Templates::builtin()?,
        };
        let spec = ModelSpec::parse(llm_name).with_context(|| format!("--llm {llm_name}"))?;
        let form = if matches!(spec, ModelSpec::Local(_) | ModelSpec::Gguf(_)) {
            PromptForm::Tokens
        } else {
            PromptForm::Text
        };
        let llm = crate::llm::load(llm_name, api)?;
        let codebook = spae.codebook();
        if form == PromptForm::Tokens {
            crate::run::check_vocabulary(llm.as_ref(), codebook)?;
        }
        let words: Vec<&str> = (0..codebook.len()).map(|i| codebook.word(i)).collect();
        let word_index = WordIndex::new(&words);
        let entry_of_token = codebook
            .token_ids()
            .iter()
            .enumerate()
            .map(|(i, &t)| (t, i))
            .collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        Ok(Self {
            spae,
            checkpoint,
            llm,
            templates,
            form,
            constrained: form == PromptForm::Tokens && !unconstrained,
            temperature,
            word_index,
            entry_of_token,
            rt,
        })
    }

    /// `count` images of `class`, written with `examples` (drawn from `data`)
    /// in context, `depth` layers each. Layer by layer across the images, so a local model
    /// reuses the examples' part of the prompt from one image to the next.
    pub fn draw(
        &self,
        data: &LabeledImages,
        class: usize,
        examples: &Examples,
        count: usize,
        depth: usize,
        seed: u64,
    ) -> Result<Vec<Generated>> {
        let (picked, examples) = (&examples.picked, &examples.pyramids);
        let codebook = self.spae.codebook();
        let pyramid = &self.spae.config().pyramid;
        let mut rng = StdRng::seed_from_u64(seed);
        let mut out: Vec<Generated> = (0..count)
            .map(|_| Generated::empty(&data.class_names[class]))
            .collect();
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
            prefix: prompt::image_slot(picked.len()),
        };
        let rendered = self.templates.render(TEMPLATE, &ctx)?;
        for layer in 0..depth {
            let context: Vec<ImageWords> =
                examples.iter().map(|p| words_up_to(p, layer + 1)).collect();
            let want = pyramid.layer_len(layer);
            for (n, record) in out.iter_mut().enumerate() {
                let mut slots: Vec<&ImageWords> = context.iter().collect();
                let prefix = entries_as_words(codebook, record.entries.iter().flatten().copied());
                slots.push(&prefix);
                let sample_seed = seed
                    .wrapping_mul(1_000_003)
                    .wrapping_add((n * 64 + layer) as u64);
                self.write_layer(&rendered, &slots, want, sample_seed, &mut rng, record)
                    .with_context(|| format!("image {n}, layer {}", layer + 1))?;
            }
        }
        Ok(out)
    }

    /// The model continues `rendered` (image slots filled from `slots`) with the `want`
    /// entries of the next layer, appended to `record`: a local model is restricted to
    /// codebook token ids; an API model's text is mapped to entries (exact, then by prefix;
    /// unknown words counted); a short layer is filled with random entries, also counted.
    pub fn write_layer(
        &self,
        rendered: &str,
        slots: &[&ImageWords],
        want: usize,
        seed: u64,
        rng: &mut StdRng,
        record: &mut Generated,
    ) -> Result<()> {
        let codebook = self.spae.codebook();
        let prompt = assemble(rendered, slots, self.form, self.llm.as_ref())?;
        let params = if self.constrained {
            // Exactly `want` tokens, each a codebook entry.
            GenerateParams {
                max_tokens: want,
                temperature: self.temperature,
                seed,
                allowed_tokens: Some(codebook.token_ids().to_vec()),
                ..GenerateParams::default()
            }
        } else {
            GenerateParams {
                max_tokens: want * 3 + 4,
                temperature: self.temperature,
                seed,
                stop: vec!["\n".into()],
                ..GenerateParams::default()
            }
        };
        let completion = self.rt.block_on(self.llm.generate(&prompt, &params))?;
        let mut entries: Vec<usize> = if self.constrained {
            record.exact += completion.tokens.len();
            completion
                .tokens
                .iter()
                .filter_map(|t| self.entry_of_token.get(t).copied())
                .collect()
        } else {
            let mapped = self.word_index.map_text(&completion.text);
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
        record.entries.push(entries);
        Ok(())
    }

    /// Pixels of pyramids given as codebook entries per layer.
    pub fn decode(&self, images: &[Vec<Vec<usize>>]) -> Result<Tensor> {
        let codebook = self.spae.codebook();
        let pyramid = &self.spae.config().pyramid;
        let pyramids = images
            .iter()
            .map(|layers| {
                let words: Vec<&str> = layers.iter().flatten().map(|&i| codebook.word(i)).collect();
                let sides: Vec<usize> = (0..layers.len()).map(|l| pyramid.side(l)).collect();
                TokenPyramid::from_words(&words, codebook, &sides)
            })
            .collect::<spae_core::Result<Vec<_>>>()?;
        Ok(self.spae.detokenize(&pyramids)?)
    }
}

pub fn generate(args: GenerateArgs) -> Result<()> {
    let g = Generator::new(
        &args.ckpt,
        &args.llm,
        &args.api,
        args.prompts.as_deref(),
        args.temperature,
        args.unconstrained,
    )?;
    let cfg = g.spae.config().clone();
    let depth = args.layers.unwrap_or(cfg.pyramid.depth());
    cfg.pyramid
        .check_depth(depth)
        .with_context(|| format!("--layers {depth}"))?;
    let data = crate::train::load_data(&args.data, Split::Train, cfg.in_channels, cfg.image_size)?;
    let class = resolve_class(&args.class, &data.class_names)?;
    let examples = draw_examples(
        &g.spae,
        &data,
        args.shots,
        depth,
        args.seed,
        (args.order, class),
    )?;
    let bar = crate::progress::bar(args.count as u64, "images");
    bar.set_message(format!("{} layers, layer by layer", depth));
    let outputs = g.draw(&data, class, &examples, args.count, depth, args.seed)?;
    let picked = examples.picked;
    bar.finish_and_clear();
    let entries: Vec<Vec<Vec<usize>>> = outputs.iter().map(|o| o.entries.clone()).collect();
    spae_core::imageio::save_png(&g.decode(&entries)?, &args.output)?;
    let json_path = args.output.with_extension("json");
    let doc = serde_json::json!({
        "checkpoint": g.checkpoint,
        "llm": args.llm,
        "class": data.class_names[class],
        "shots": args.shots,
        "examples": picked,
        "order": args.order,
        "layers": depth,
        "temperature": args.temperature,
        "seed": args.seed,
        "constrained_to_codebook": g.constrained,
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

/// In-context examples: indices into the training data, and their pyramids.
pub struct Examples {
    pub picked: Vec<usize>,
    pub pyramids: Vec<TokenPyramid>,
}

/// `shots` training images drawn at random (all classes), in `order` for `class`, and their
/// pyramids.
fn draw_examples(
    spae: &SpaeModel,
    data: &LabeledImages,
    shots: usize,
    depth: usize,
    seed: u64,
    order: (ExampleOrder, usize),
) -> Result<Examples> {
    if shots == 0 || shots > data.len() {
        bail!("--shots {shots}: between 1 and {} examples", data.len());
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut picked = index::sample(&mut rng, data.len(), shots).into_vec();
    order_examples(&mut picked, &data.labels, order.0, order.1);
    let pyramids = spae.tokenize(&data.batch(&picked, &Device::Cpu)?, depth)?;
    Ok(Examples { picked, pyramids })
}

/// Put the drawn examples `picked` in `order` for `class`: a stable sort on "is the requested
/// class", so the draw is the same and only its examples move next to the line the model
/// continues.
fn order_examples(picked: &mut [usize], labels: &[u32], order: ExampleOrder, class: usize) {
    if order == ExampleOrder::ClassLast {
        picked.sort_by_key(|&i| labels[i] as usize == class);
    }
}

/// One row of `eval-generate`'s table.
#[derive(Debug, Clone, Serialize)]
struct MethodSummary {
    method: String,
    images: usize,
    /// Share the judge reads as the requested class.
    judge_accuracy: f64,
    /// Distinct token sequences / images.
    distinct: f64,
    /// Share of images whose tokens are not a copy of an in-context example.
    novel: f64,
    /// Mean over images of the RMSE (pixels in [0, 1]) to the nearest in-context example.
    nearest_example_rmse: f64,
    /// Words the model wrote that were not codebook entries, per word written.
    unknown_word_rate: f64,
}

pub fn eval_generate(args: EvalGenerateArgs) -> Result<()> {
    let judge = match &args.judge {
        Some(p) => crate::judge::DigitJudge::load(p)?,
        None => crate::judge::DigitJudge::builtin()?,
    };
    let g = Generator::new(
        &args.ckpt,
        &args.llm,
        &args.api,
        args.prompts.as_deref(),
        args.temperature,
        false,
    )?;
    let cfg = g.spae.config().clone();
    let depth = args.layers.unwrap_or(cfg.pyramid.depth());
    cfg.pyramid
        .check_depth(depth)
        .with_context(|| format!("--layers {depth}"))?;
    let data = spae_datasets::mnist(&spae_assets::AssetCache::from_env(), Split::Train)?;
    let codebook_len = g.spae.codebook().len();
    let classes: Vec<usize> = (0..data.class_names.len()).collect();
    let bar = crate::progress::bar(classes.len() as u64, "classes");
    // method -> (requested class, entries, nearest-example rmse, is copy) per image.
    let methods = ["llm", "random words", "copy an example"];
    let mut per_method: Vec<Vec<(usize, Vec<Vec<usize>>)>> = vec![Vec::new(); 3];
    let mut example_sets = Vec::new();
    let mut unknown = (0usize, 0usize);
    let mut rng = StdRng::seed_from_u64(args.seed ^ 0x5eed);
    for &class in &classes {
        let seed = args.seed.wrapping_add(class as u64 * 7919);
        let examples = draw_examples(&g.spae, &data, args.shots, depth, seed, (args.order, class))?;
        let example_entries: Vec<Vec<Vec<usize>>> = examples
            .pyramids
            .iter()
            .map(|p| {
                p.layers
                    .iter()
                    .map(|l| l.indices.iter().map(|&i| i as usize).collect())
                    .collect()
            })
            .collect();
        for o in g.draw(&data, class, &examples, args.count, depth, seed)? {
            unknown.0 += o.unknown.len();
            unknown.1 += o.unknown.len() + o.exact + o.by_prefix;
            per_method[0].push((class, o.entries));
        }
        for _ in 0..args.count {
            let random: Vec<Vec<usize>> = (0..depth)
                .map(|l| {
                    (0..cfg.pyramid.layer_len(l))
                        .map(|_| rng.gen_range(0..codebook_len))
                        .collect()
                })
                .collect();
            per_method[1].push((class, random));
            // A copy of an example of the requested class where the context has one.
            let picked = &examples.picked;
            let same: Vec<usize> = (0..picked.len())
                .filter(|&k| data.labels[picked[k]] as usize == class)
                .collect();
            let k = if same.is_empty() {
                rng.gen_range(0..picked.len())
            } else {
                same[rng.gen_range(0..same.len())]
            };
            per_method[2].push((class, example_entries[k].clone()));
        }
        // The examples' pixels, flat, once per class: every image of the class is compared to them.
        let example_pixels = data
            .batch(&examples.picked, &Device::Cpu)?
            .flatten_from(1)?;
        example_sets.push((example_pixels, example_entries));
        bar.inc(1);
    }
    bar.finish_and_clear();

    let mut rows = Vec::new();
    for (m, name) in methods.iter().enumerate() {
        let images = &per_method[m];
        let entries: Vec<Vec<Vec<usize>>> = images.iter().map(|(_, e)| e.clone()).collect();
        let pixels = g.decode(&entries)?;
        let predicted = judge.predict(&pixels)?;
        let hits = images
            .iter()
            .zip(&predicted)
            .filter(|((c, _), p)| **p as usize == *c)
            .count();
        let distinct = entries
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len();
        let mut novel = 0usize;
        let mut rmse_sum = 0.0f64;
        for (i, (class, e)) in images.iter().enumerate() {
            let (ex, example_entries) = &example_sets[*class];
            novel += (!example_entries.contains(e)) as usize;
            let img = pixels.get(i)?.flatten_all()?;
            let d = ex
                .broadcast_sub(&img.unsqueeze(0)?)?
                .sqr()?
                .mean(1)?
                .sqrt()?
                .min(0)?
                .to_scalar::<f32>()?;
            rmse_sum += d as f64;
        }
        let n = images.len().max(1) as f64;
        rows.push(MethodSummary {
            method: name.to_string(),
            images: images.len(),
            judge_accuracy: hits as f64 / n,
            distinct: distinct as f64 / n,
            novel: novel as f64 / n,
            nearest_example_rmse: rmse_sum / n,
            unknown_word_rate: if m == 0 {
                unknown.0 as f64 / unknown.1.max(1) as f64
            } else {
                0.0
            },
        });
    }
    let mut md = format!(
        "Generated MNIST digits, {} per class, {} in-context examples ({}), {} layers, {}, temperature {}; judged by a classifier trained on MNIST pixels.\n\n\
         | method | images | judge says the requested digit | distinct | novel (not a copy of an example) | RMSE to nearest example | unknown words |\n|---|---|---|---|---|---|---|\n",
        args.count,
        args.shots,
        args.order.describe(),
        depth,
        args.llm,
        args.temperature
    );
    for r in &rows {
        md.push_str(&format!(
            "| {} | {} | {:.1}% | {:.0}% | {:.0}% | {:.3} | {:.1}% |\n",
            r.method,
            r.images,
            100.0 * r.judge_accuracy,
            100.0 * r.distinct,
            100.0 * r.novel,
            r.nearest_example_rmse,
            100.0 * r.unknown_word_rate
        ));
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    crate::run::results::write_atomic(&args.out.join("eval-generate.md"), &md)?;
    crate::run::results::write_atomic(
        &args.out.join("eval-generate.json"),
        &serde_json::to_string_pretty(&serde_json::json!({
            "checkpoint": g.checkpoint,
            "checkpoint_sha256": crate::tokens::checkpoint_sha256(&args.ckpt)?,
            "llm": args.llm, "shots": args.shots, "count": args.count,
            "layers": depth, "temperature": args.temperature, "seed": args.seed, "order": args.order,
            "rows": rows,
        }))?,
    )?;
    let grid: Vec<Vec<Vec<usize>>> = per_method[0].iter().map(|(_, e)| e.clone()).collect();
    spae_core::imageio::save_png(&g.decode(&grid)?, &args.out.join("generated.png"))?;
    println!("{md}");
    Ok(())
}

/// The words and token ids of a pyramid's first `layers` layers.
pub(crate) fn words_up_to(p: &TokenPyramid, layers: usize) -> ImageWords {
    let (mut words, mut token_ids) = (Vec::new(), Vec::new());
    for l in p.layers.iter().take(layers) {
        words.extend(l.words.iter().cloned());
        token_ids.extend(l.token_ids.iter().copied());
    }
    ImageWords { words, token_ids }
}

pub(crate) fn entries_as_words(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_last_moves_only_the_requested_class_and_keeps_the_draw() {
        let labels = [3u32, 7, 1, 7, 3, 0];
        let drawn = vec![4, 1, 0, 5, 3, 2];
        let mut picked = drawn.clone();
        order_examples(&mut picked, &labels, ExampleOrder::ClassLast, 7);
        // the others in drawn order, then the sevens in drawn order
        assert_eq!(picked, vec![4, 0, 5, 2, 1, 3]);
        let mut same = drawn.clone();
        order_examples(&mut same, &labels, ExampleOrder::Random, 7);
        assert_eq!(same, drawn);
    }
}
