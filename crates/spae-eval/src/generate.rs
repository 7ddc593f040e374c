//! A frozen LLM draws. Given labelled examples "<label>:<image words>" from a training split,
//! the model writes the words of new images of the requested class one pyramid layer at a
//! time, the progressive in-context decoding of SPAE (Yu et al., NeurIPS 2023, Sec. 3.3;
//! conditional generation, Sec. 4.3): layer 1 with the examples' layer 1 in context, then
//! layer 2 given its own layer 1 and the examples' layers 1-2, and so on. The decoder turns
//! the words into pixels.
//!
//! [`generate`] draws images of one class; [`eval_generate`] scores drawings of every MNIST
//! digit against an independent judge ([`spae_core::judge`]), beside two baselines drawn in
//! the same run: random codebook words, and a copy of an in-context example. [`Generator`]
//! is what image-to-image ([`crate::image2image`]) and the VQA tasks share.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use llm_client::{GenerateParams, LanguageModel};
use prompt::{GenerationContext, GenerationExample, WordIndex};
use rand::rngs::StdRng;
use rand::seq::index;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use spae_core::judge::{DigitJudge, JudgeTrainConfig};
use spae_core::LabeledPixels;
use spae_core::{Codebook, SpaeModel, TokenPyramid};
use spae_datasets::{LabeledImages, Split};

use crate::bail;
use crate::error::{Context, Result};
use crate::fewshot::assemble;
use crate::fewshot::words::ImageWords;
use crate::llm::{LlmConfig, PromptForm};
use crate::progress::Progress;
use crate::reader::Reader;
use crate::store::{default_out, open_results, ResultStore};
use crate::tokenizer::CheckpointRef;
use crate::util::{sha256_hex, slug, write_atomic};

/// The template a generation prompt is rendered from.
pub const TEMPLATE: &str = "generation";

/// Pyramid layers written unless asked otherwise: 3 (21 words per image on the 1,2,4,..
/// pyramid), the depth every measured generation result used. The whole grown pyramid (7
/// layers, 277 words per image) makes each image hundreds of LLM tokens: `eval-generate
/// --count 3` ran 14 minutes at full depth.
pub const DEFAULT_LAYERS: usize = 3;

/// Where the in-context examples of the requested class sit in a generation prompt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExampleOrder {
    /// In the order drawn.
    #[default]
    Random,
    /// The requested class's examples last, nearest the line the model continues (the same
    /// draw, reordered). Measured with Gemma 3 270M it did not help: 42% of digits recognised
    /// against 48% in random order at temperature 0.7 (`eval/README.md`).
    ClassLast,
}

impl ExampleOrder {
    pub const ALL: [ExampleOrder; 2] = [ExampleOrder::Random, ExampleOrder::ClassLast];

    /// The name a flag and the result files take.
    pub fn name(self) -> &'static str {
        match self {
            Self::Random => "random",
            Self::ClassLast => "class-last",
        }
    }

    /// How a report describes it.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Random => "in random order",
            Self::ClassLast => "the requested class's last",
        }
    }
}

/// What one generated image is made of, written beside the PNG.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// A frozen LLM and a tokenizer, set up to write images.
pub struct Generator {
    pub reader: Reader,
    constrained: bool,
    temperature: f32,
    word_index: WordIndex,
    entry_of_token: HashMap<u32, usize>,
}

impl Generator {
    /// The tokenizer `checkpoint`, the LLM `llm` behind its response cache, the templates
    /// (the built-in ones, `prompts` replacing those it has). A local model reads image words
    /// as exact token ids and, unless `unconstrained`, writes only codebook tokens; an API
    /// model reads and writes text.
    pub fn new(w: &WriterConfig) -> Result<Self> {
        let reader = Reader::load(&w.checkpoint, &w.llm, w.prompts.as_deref())?;
        let codebook = reader.spae.codebook();
        let words: Vec<&str> = (0..codebook.len()).map(|i| codebook.word(i)).collect();
        let word_index = WordIndex::new(&words);
        let entry_of_token = codebook
            .token_ids()
            .iter()
            .enumerate()
            .map(|(i, &t)| (t, i))
            .collect();
        Ok(Self {
            constrained: reader.form == PromptForm::Tokens && !w.unconstrained,
            reader,
            temperature: w.temperature,
            word_index,
            entry_of_token,
        })
    }

    /// Whether the LLM may write only codebook tokens.
    pub fn constrained(&self) -> bool {
        self.constrained
    }

    /// `count` images of `class`, written with `examples` (drawn from `data`) in context,
    /// `depth` layers each. Layer by layer across the images, so a local model reuses the
    /// examples' part of the prompt from one image to the next. `progress` counts LLM calls
    /// (`count * depth`).
    #[allow(clippy::too_many_arguments)]
    pub fn draw(
        &self,
        data: &LabeledImages,
        class: usize,
        examples: &Examples,
        count: usize,
        depth: usize,
        seed: u64,
        progress: Option<&Progress>,
    ) -> Result<Vec<Generated>> {
        let (picked, examples) = (&examples.picked, &examples.pyramids);
        let codebook = self.reader.spae.codebook();
        let pyramid = &self.reader.spae.config().pyramid;
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
        let rendered = self.reader.templates.render(TEMPLATE, &ctx)?;
        for layer in 0..depth {
            let context: Vec<ImageWords> =
                examples.iter().map(|p| words_up_to(p, layer + 1)).collect();
            let want = pyramid.layer_len(layer);
            for (n, record) in out.iter_mut().enumerate() {
                let mut slots: Vec<&ImageWords> = context.iter().collect();
                let prefix = entries_as_words(codebook, record.entries.iter().flatten().copied());
                slots.push(&prefix);
                let sample_seed = crate::util::layer_seed(seed, n, layer);
                self.write_layer(&rendered, &slots, want, sample_seed, &mut rng, record)
                    .with_context(|| format!("image {n}, layer {}", layer + 1))?;
                if let Some(p) = progress {
                    p.inc(1);
                }
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
        let codebook = self.reader.spae.codebook();
        let prompt = assemble(rendered, slots, self.reader.form, self.reader.llm.as_ref())?;
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
        let completion = self
            .reader
            .block_on(self.reader.llm.generate(&prompt, &params))?;
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
        let codebook = self.reader.spae.codebook();
        let pyramid = &self.reader.spae.config().pyramid;
        let pyramids = images
            .iter()
            .map(|layers| {
                let words: Vec<&str> = layers.iter().flatten().map(|&i| codebook.word(i)).collect();
                let sides: Vec<usize> = (0..layers.len()).map(|l| pyramid.side(l)).collect();
                TokenPyramid::from_words(&words, codebook, &sides)
            })
            .collect::<spae_core::Result<Vec<_>>>()?;
        Ok(self.reader.spae.detokenize(&pyramids)?)
    }
}

/// In-context examples: indices into the training data, and their pyramids.
pub struct Examples {
    pub picked: Vec<usize>,
    pub pyramids: Vec<TokenPyramid>,
}

/// `shots` training images drawn at random (all classes), in `order` for `class`, and their
/// pyramids.
pub fn draw_examples(
    spae: &SpaeModel,
    data: &LabeledImages,
    shots: usize,
    depth: usize,
    seed: u64,
    order: ExampleOrder,
    class: usize,
) -> Result<Examples> {
    if shots == 0 || shots > data.len() {
        bail!("--shots {shots}: between 1 and {} examples", data.len());
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut picked = index::sample(&mut rng, data.len(), shots).into_vec();
    order_examples(&mut picked, &data.labels, order, class);
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

/// The words and token ids of a pyramid's first `layers` layers.
pub fn words_up_to(p: &TokenPyramid, layers: usize) -> ImageWords {
    ImageWords::of_pyramid(p, layers)
}

/// Codebook entries as the words (and token ids) a prompt shows.
pub fn entries_as_words(codebook: &Codebook, entries: impl Iterator<Item = usize>) -> ImageWords {
    let (words, token_ids) = entries
        .map(|i| (codebook.word(i).to_string(), codebook.token_ids()[i]))
        .unzip();
    ImageWords { words, token_ids }
}

/// Words per layer (as a result file keeps them) back to codebook entries. A word that is not
/// an entry is an error naming it: such a file was written with another checkpoint, or edited.
pub fn entries_of_words(codebook: &Codebook, layers: &[Vec<String>]) -> Result<Vec<Vec<usize>>> {
    layers
        .iter()
        .enumerate()
        .map(|(l, words)| {
            words
                .iter()
                .map(|w| {
                    codebook.index_of_word(w).with_context(|| {
                        format!(
                            "word {w:?} of layer {} is not an entry of the checkpoint's codebook ({})",
                            l + 1,
                            codebook.info().source
                        )
                    })
                })
                .collect()
        })
        .collect()
}

/// A class by name ("seven", case-insensitive) or by index ("7").
pub fn resolve_class(arg: &str, names: &[String]) -> Result<usize> {
    if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(arg)) {
        return Ok(i);
    }
    match arg.parse::<usize>() {
        Ok(i) if i < names.len() => Ok(i),
        _ => bail!(
            "--class {arg:?}: not one of {} (or 0-{})",
            names.join(", "),
            names.len().saturating_sub(1)
        ),
    }
}

/// The tokenizer and the LLM that write an image's words, and how they sample: what
/// generation and image to image share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WriterConfig {
    pub checkpoint: CheckpointRef,
    pub llm: LlmConfig,
    /// Sampling temperature (0: greedy).
    pub temperature: f32,
    pub seed: u64,
    /// Let a local model write any token, then map its words to entries (as for an API model).
    pub unconstrained: bool,
    /// A folder of templates that replace the built-in ones of the same name.
    pub prompts: Option<PathBuf>,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            checkpoint: CheckpointRef::or_default(None),
            llm: LlmConfig::default(),
            // `eval/README.md` compares 0.1, 0.3 and 0.7.
            temperature: 0.3,
            seed: 0,
            unconstrained: false,
            prompts: None,
        }
    }
}

/// `generate`: images of one class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GenerateConfig {
    /// The class to draw: a name ("seven", "sneaker") or its index. Required: the default
    /// (empty) is refused.
    pub class: String,
    /// In-context examples "<label>:<image words>" drawn from the training split.
    pub shots: usize,
    /// Where the requested class's examples sit among the drawn ones.
    pub order: ExampleOrder,
    /// Images to generate.
    pub count: usize,
    /// Pyramid layers to write.
    pub layers: usize,
    /// Training data, a spec of `spae_datasets::load_spec`: mnist, fashion-mnist, folder:DIR.
    pub data: String,
    /// The tokenizer and the LLM that write, and how they sample.
    #[serde(flatten)]
    pub writer: WriterConfig,
    /// The PNG to write (images side by side); the words go to the same name with .json.
    /// Default: `runs/generate/<data>-<class>-L<layers>-seed<seed>-<llm>.png`.
    pub output: Option<PathBuf>,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        Self {
            class: String::new(),
            shots: 50,
            order: ExampleOrder::Random,
            count: 1,
            layers: DEFAULT_LAYERS,
            data: "mnist".into(),
            writer: WriterConfig::default(),
            output: None,
        }
    }
}

impl GenerateConfig {
    /// The defaults, drawing `class`.
    pub fn for_class(class: &str) -> Self {
        Self {
            class: class.to_string(),
            ..Self::default()
        }
    }

    /// Where the PNG goes unless `output` says.
    pub fn default_output(&self, class_name: &str) -> PathBuf {
        default_out(&[
            "generate",
            &format!(
                "{}-{}-L{}-seed{}-{}.png",
                slug(&self.data),
                slug(class_name),
                self.layers,
                self.writer.seed,
                slug(&self.writer.llm.name)
            ),
        ])
    }
}

/// What [`generate`] wrote.
#[derive(Debug, Clone)]
pub struct GenerateSummary {
    /// The images side by side.
    pub png: PathBuf,
    /// Their words and how they were read.
    pub json: PathBuf,
    pub class: String,
    pub images: Vec<Generated>,
}

impl GenerateSummary {
    /// Words the model wrote that are no codebook entry, over all images.
    pub fn unknown_words(&self) -> usize {
        self.images.iter().map(|o| o.unknown.len()).sum()
    }

    /// Entries drawn at random to fill layers the model left short, over all images.
    pub fn filled_at_random(&self) -> usize {
        self.images.iter().map(|o| o.filled_at_random).sum()
    }
}

impl std::fmt::Display for GenerateSummary {
    /// The line `spae-icl generate` prints.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "wrote {} ({} image(s) of {}) and {}; unknown words: {}, filled at random: {}",
            self.png.display(),
            self.images.len(),
            self.class,
            self.json.display(),
            self.unknown_words(),
            self.filled_at_random()
        )
    }
}

/// Draws `cfg.count` images of `cfg.class` and writes them (PNG) and their words (JSON).
pub fn generate(cfg: &GenerateConfig) -> Result<GenerateSummary> {
    if cfg.class.trim().is_empty() {
        bail!("--class: name the class to draw (a name or its index)");
    }
    if cfg.count == 0 {
        bail!("--count 0: draw at least one image");
    }
    let g = Generator::new(&cfg.writer)?;
    let mc = g.reader.spae.config().clone();
    let depth = g.reader.depth(cfg.layers)?;
    let data = spae_datasets::load_spec(&cfg.data, Split::Train, mc.in_channels, mc.image_size)?;
    let class = resolve_class(&cfg.class, &data.class_names)?;
    let examples = draw_examples(
        &g.reader.spae,
        &data,
        cfg.shots,
        depth,
        cfg.writer.seed,
        cfg.order,
        class,
    )?;
    let bar = crate::progress::bar((cfg.count * depth) as u64, "LLM calls");
    bar.set_message(format!("{depth} layers, layer by layer"));
    let outputs = g.draw(
        &data,
        class,
        &examples,
        cfg.count,
        depth,
        cfg.writer.seed,
        Some(&bar),
    )?;
    bar.finish_and_clear();
    let class_name = data.class_names[class].clone();
    let png = cfg
        .output
        .clone()
        .unwrap_or_else(|| cfg.default_output(&class_name));
    if let Some(dir) = png.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let entries: Vec<Vec<Vec<usize>>> = outputs.iter().map(|o| o.entries.clone()).collect();
    spae_core::imageio::save_png(&g.decode(&entries)?, &png)?;
    let json = png.with_extension("json");
    let doc = serde_json::json!({
        "checkpoint": g.reader.checkpoint,
        "llm": cfg.writer.llm.name,
        "class": class_name,
        "shots": cfg.shots,
        "examples": examples.picked,
        "order": cfg.order,
        "layers": depth,
        "temperature": cfg.writer.temperature,
        "seed": cfg.writer.seed,
        "constrained_to_codebook": g.constrained,
        "images": outputs,
    });
    write_atomic(&json, &serde_json::to_string_pretty(&doc)?)?;
    Ok(GenerateSummary {
        png,
        json,
        class: class_name,
        images: outputs,
    })
}

/// The judge at `path`, or the built-in one.
pub fn load_judge(path: Option<&Path>) -> Result<DigitJudge> {
    Ok(match path {
        Some(p) => DigitJudge::load(p)?,
        None => DigitJudge::builtin()?,
    })
}

/// `eval-generate`: drawings of every MNIST digit, judged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EvalGenerateConfig {
    /// In-context examples per class's prompt.
    pub shots: usize,
    /// Images generated per class.
    pub count: usize,
    /// Where the requested class's examples sit among the drawn ones.
    pub order: ExampleOrder,
    /// Pyramid layers written.
    pub layers: usize,
    /// The tokenizer and the LLM that write, and how they sample.
    #[serde(flatten)]
    pub writer: WriterConfig,
    /// The judge (default: the built-in `checkpoints/judge-mnist.safetensors`).
    pub judge: Option<PathBuf>,
    /// Default: [`EvalGenerateConfig::default_out`].
    pub out: Option<PathBuf>,
}

impl Default for EvalGenerateConfig {
    fn default() -> Self {
        Self {
            shots: 50,
            count: 10,
            order: ExampleOrder::Random,
            layers: DEFAULT_LAYERS,
            writer: WriterConfig::default(),
            judge: None,
            out: None,
        }
    }
}

impl EvalGenerateConfig {
    /// `runs/eval-generate/<settings>`: one folder per setting, so a rerun resumes and
    /// settings never mix; the tokenizer is named by its checkpoint's hash.
    pub fn default_out(&self, checkpoint_sha256: &str) -> PathBuf {
        default_out(&[
            "eval-generate",
            &format!(
                "mnist-{}shot-{}each-{}-L{}-t{}-seed{}-{}-ckpt{}",
                self.shots,
                self.count,
                self.order.name(),
                self.layers,
                self.writer.temperature,
                self.writer.seed,
                slug(&self.writer.llm.name),
                checkpoint_sha256.get(..8).unwrap_or(checkpoint_sha256)
            ),
        ])
    }
}

/// One line of `eval-generate`'s `results.jsonl`: the LLM's images of one class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassDraws {
    pub class: usize,
    /// Words per layer and how they were read, per image.
    pub images: Vec<Generated>,
    /// Codebook entries per layer, per image.
    pub entries: Vec<Vec<Vec<usize>>>,
}

/// One row of `eval-generate`'s table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodSummary {
    pub method: String,
    pub images: usize,
    /// Share the judge reads as the requested class.
    pub judge_accuracy: f64,
    /// Distinct token sequences / images.
    pub distinct: f64,
    /// Share of images whose tokens are not a copy of an in-context example.
    pub novel: f64,
    /// Mean over images of the RMSE (pixels in [0, 1]) to the nearest in-context example.
    pub nearest_example_rmse: f64,
    /// Words the model wrote that were not codebook entries, per word written.
    pub unknown_word_rate: f64,
}

/// What [`eval_generate`] measured and wrote.
#[derive(Debug, Clone)]
pub struct EvalGenerateSummary {
    pub out: PathBuf,
    /// The LLM, random words, a copy of an example.
    pub rows: Vec<MethodSummary>,
    /// `eval-generate.md`, which `spae-icl eval-generate` prints.
    pub markdown: String,
    /// Classes the LLM drew in this run, and classes read back from an earlier one.
    pub drawn: usize,
    pub resumed: usize,
}

/// Draws `cfg.count` images of each MNIST digit with the LLM, beside random words and copies
/// of an in-context example, and has the judge read them all. The LLM's drawings are saved
/// per class as they finish (`results.jsonl`), so a rerun draws only the classes missing.
/// Writes `eval-generate.md`, `eval-generate.json` and `generated.png` (the LLM's images).
pub fn eval_generate(cfg: &EvalGenerateConfig) -> Result<EvalGenerateSummary> {
    if cfg.count == 0 {
        bail!("--count 0: draw at least one image per class");
    }
    let judge = load_judge(cfg.judge.as_deref())?;
    let g = Generator::new(&cfg.writer)?;
    let mc = g.reader.spae.config().clone();
    let depth = g.reader.depth(cfg.layers)?;
    let side = judge.config().image_size;
    if mc.in_channels != 1 || mc.image_size != side {
        bail!(
            "checkpoint {} draws {}x{}x{} images; the judge reads {side}x{side} gray digits: use \
             a gray MNIST checkpoint",
            g.reader.checkpoint,
            mc.in_channels,
            mc.image_size,
            mc.image_size
        );
    }
    let data = spae_datasets::load_spec("mnist", Split::Train, 1, side)?;
    let checkpoint_sha256 = cfg.writer.checkpoint.sha256()?;
    let identity = serde_json::json!({
        "task": "eval-generate",
        "data": "mnist",
        "checkpoint_sha256": checkpoint_sha256,
        "llm": cfg.writer.llm.name,
        "template_sha256": sha256_hex(g.reader.templates.source(TEMPLATE)?.as_bytes()),
        "constrained": g.constrained,
        "shots": cfg.shots,
        "count": cfg.count,
        "order": cfg.order,
        "layers": depth,
        "temperature": cfg.writer.temperature,
        "seed": cfg.writer.seed,
    });
    let out = cfg
        .out
        .clone()
        .unwrap_or_else(|| cfg.default_out(&checkpoint_sha256));
    let extra = serde_json::json!({
        "checkpoint": g.reader.checkpoint,
        "judge": cfg.judge.as_ref().map_or(spae_core::judge::BUILTIN_NAME.to_string(), |p| p.display().to_string()),
        "spae_eval_version": env!("CARGO_PKG_VERSION"),
    });
    let mut store: ResultStore<ClassDraws> =
        open_results(&out, &identity, &extra, |r: &ClassDraws| r.class)?;

    let codebook_len = g.reader.spae.codebook().len();
    let classes: Vec<usize> = (0..data.class_names.len()).collect();
    let calls_per_class = (cfg.count * depth) as u64;
    let bar = crate::progress::bar(classes.len() as u64 * calls_per_class, "LLM calls");
    // method -> (requested class, entries) per image.
    let methods = ["llm", "random words", "copy an example"];
    let mut per_method: Vec<Vec<(usize, Vec<Vec<usize>>)>> = vec![Vec::new(); 3];
    let mut example_sets = Vec::new();
    let mut unknown = (0usize, 0usize);
    let (mut drawn, mut resumed) = (0usize, 0usize);
    let mut rng = StdRng::seed_from_u64(cfg.writer.seed ^ 0x5eed);
    for &class in &classes {
        bar.set_message(format!("class {}", data.class_names[class]));
        let seed = cfg.writer.seed.wrapping_add(class as u64 * 7919);
        let examples = draw_examples(
            &g.reader.spae,
            &data,
            cfg.shots,
            depth,
            seed,
            cfg.order,
            class,
        )?;
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
        let draws = match store.get(class) {
            Some(d) => {
                bar.inc(calls_per_class);
                resumed += 1;
                d.clone()
            }
            None => {
                let images = g
                    .draw(&data, class, &examples, cfg.count, depth, seed, Some(&bar))
                    .with_context(|| {
                        format!(
                            "class {} (the classes finished before it are saved in {}; rerun the same command to resume)",
                            data.class_names[class],
                            out.display()
                        )
                    })?;
                let d = ClassDraws {
                    class,
                    entries: images.iter().map(|o| o.entries.clone()).collect(),
                    images,
                };
                store.append(d.clone())?;
                drawn += 1;
                d
            }
        };
        for (o, entries) in draws.images.iter().zip(draws.entries) {
            unknown.0 += o.unknown.len();
            unknown.1 += o.unknown.len() + o.exact + o.by_prefix;
            per_method[0].push((class, entries));
        }
        for _ in 0..cfg.count {
            let random: Vec<Vec<usize>> = (0..depth)
                .map(|l| {
                    (0..mc.pyramid.layer_len(l))
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
    }
    bar.finish_and_clear();
    tracing::info!(
        "{} classes: {drawn} drawn, {resumed} resumed from {}",
        classes.len(),
        out.display()
    );

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
        cfg.count,
        cfg.shots,
        cfg.order.describe(),
        depth,
        cfg.writer.llm.name,
        cfg.writer.temperature
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
    write_atomic(&out.join("eval-generate.md"), &md)?;
    write_atomic(
        &out.join("eval-generate.json"),
        &serde_json::to_string_pretty(&serde_json::json!({
            "checkpoint": g.reader.checkpoint,
            "checkpoint_sha256": checkpoint_sha256,
            "llm": cfg.writer.llm.name, "shots": cfg.shots, "count": cfg.count,
            "layers": depth, "temperature": cfg.writer.temperature, "seed": cfg.writer.seed, "order": cfg.order,
            "rows": rows,
        }))?,
    )?;
    let grid: Vec<Vec<Vec<usize>>> = per_method[0].iter().map(|(_, e)| e.clone()).collect();
    spae_core::imageio::save_png(&g.decode(&grid)?, &out.join("generated.png"))?;
    Ok(EvalGenerateSummary {
        out,
        rows,
        markdown: md,
        drawn,
        resumed,
    })
}

/// Where `train-judge` writes unless told: under `./runs/`, never over the shipped judge.
pub fn default_judge_out() -> PathBuf {
    default_out(&["judge", "judge-mnist.safetensors"])
}

/// What [`train_mnist_judge`] wrote.
#[derive(Debug, Clone)]
pub struct TrainedJudge {
    /// The judge (safetensors).
    pub out: PathBuf,
    /// Its metrics, beside it (.json).
    pub metrics: PathBuf,
    pub mnist_test_accuracy: f64,
}

impl std::fmt::Display for TrainedJudge {
    /// The line `spae-icl train-judge` prints.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "MNIST test accuracy {:.2}% -> {}",
            100.0 * self.mnist_test_accuracy,
            self.out.display()
        )
    }
}

/// Trains a judge on MNIST's training split ([`spae_core::judge::train_judge`]), measures it
/// on the test split, and writes it to `out` with its metrics beside it (`out` with .json).
pub fn train_mnist_judge(cfg: &JudgeTrainConfig, out: &Path) -> Result<TrainedJudge> {
    let side = cfg.judge.image_size;
    let train = spae_datasets::load_spec("mnist", Split::Train, 1, side)?;
    let test = spae_datasets::load_spec("mnist", Split::Test, 1, side)?;
    fn images(set: &LabeledImages) -> Result<LabeledPixels<'_>> {
        LabeledPixels::new(&set.pixels, &set.labels, set.channels, set.size)
            .with_context(|| format!("{} images", set.name))
    }
    let mut bar: Option<Progress> = None;
    let judge = spae_core::judge::train_judge(cfg, &images(&train)?, &mut |s| {
        let b = bar.get_or_insert_with(|| crate::progress::bar(s.total as u64, "judge steps"));
        b.inc(1);
        if let Some(loss) = s.loss {
            b.set_message(format!("epoch {} loss {loss:.3}", s.epoch + 1));
        }
    })?;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let acc = spae_core::judge::accuracy(&judge, &images(&test)?)?;
    judge.save(out)?;
    let metrics = serde_json::json!({
        "mnist_test_accuracy": acc, "epochs": cfg.epochs, "batch_size": cfg.batch_size,
        "lr": cfg.lr, "seed": cfg.seed, "config": cfg.judge,
    });
    let metrics_path = out.with_extension("json");
    write_atomic(&metrics_path, &serde_json::to_string_pretty(&metrics)?)?;
    Ok(TrainedJudge {
        out: out.to_path_buf(),
        metrics: metrics_path,
        mnist_test_accuracy: acc,
    })
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

    #[test]
    fn defaults_write_three_layers_under_runs() {
        let eval = EvalGenerateConfig::default();
        assert_eq!(eval.layers, 3);
        assert_eq!(
            (eval.shots, eval.count, eval.writer.temperature),
            (50, 10, 0.3)
        );
        assert_eq!(
            eval.default_out("414ea9e04a1f0000"),
            Path::new("runs/eval-generate/mnist-50shot-10each-random-L3-t0.3-seed0-local_gemma3-270m-ckpt414ea9e0")
        );
        let gen = GenerateConfig::for_class("seven");
        assert_eq!((gen.layers, gen.count, gen.shots), (3, 1, 50));
        assert_eq!(
            gen.default_output("seven"),
            Path::new("runs/generate/mnist-seven-L3-seed0-local_gemma3-270m.png")
        );
    }

    #[test]
    fn example_order_names_round_trip_through_serde() {
        for order in ExampleOrder::ALL {
            let json = serde_json::to_string(&order).unwrap();
            assert_eq!(json, format!("\"{}\"", order.name()));
            assert_eq!(serde_json::from_str::<ExampleOrder>(&json).unwrap(), order);
        }
        // A config file may leave out what it keeps at the default.
        let cfg: EvalGenerateConfig = serde_json::from_str(r#"{"order": "class-last"}"#).unwrap();
        assert_eq!(
            (cfg.order, cfg.layers),
            (ExampleOrder::ClassLast, DEFAULT_LAYERS)
        );
    }

    #[test]
    fn classes_resolve_by_name_or_index_and_others_are_named() {
        let names: Vec<String> = ["zero", "one", "two"].map(String::from).to_vec();
        assert_eq!(resolve_class("TWO", &names).unwrap(), 2);
        assert_eq!(resolve_class("1", &names).unwrap(), 1);
        let err = resolve_class("seven", &names).unwrap_err().to_string();
        assert!(
            err.contains("\"seven\"") && err.contains("zero, one, two"),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_word_is_an_error_that_names_it() {
        let (spae, _) = CheckpointRef::or_default(None).load(&Device::Cpu).unwrap();
        let cb = spae.codebook();
        let layers = vec![
            vec![cb.word(0).to_string()],
            vec![cb.word(5).to_string(), cb.word(9).to_string()],
        ];
        assert_eq!(
            entries_of_words(cb, &layers).unwrap(),
            vec![vec![0], vec![5, 9]]
        );
        let bad = vec![vec![cb.word(0).to_string()], vec!["qqxqzz".to_string()]];
        let err = entries_of_words(cb, &bad).unwrap_err().to_string();
        assert!(
            err.contains("\"qqxqzz\"") && err.contains("layer 2"),
            "{err}"
        );
    }

    #[test]
    fn class_draws_keep_their_entries_through_the_result_file() {
        let dir = tempfile::tempdir().unwrap();
        let id = serde_json::json!({"task": "eval-generate"});
        let mut image = Generated::empty("seven");
        image.layers = vec![vec!["cat".into()]];
        image.entries = vec![vec![17]];
        let line = ClassDraws {
            class: 7,
            entries: vec![image.entries.clone()],
            images: vec![image],
        };
        let mut store = open_results(dir.path(), &id, &serde_json::json!({}), |r: &ClassDraws| {
            r.class
        })
        .unwrap();
        store.append(line.clone()).unwrap();
        drop(store);
        let again: ResultStore<ClassDraws> =
            open_results(dir.path(), &id, &serde_json::json!({}), |r: &ClassDraws| {
                r.class
            })
            .unwrap();
        let back = again.get(7).unwrap();
        assert_eq!(back.entries, line.entries);
        assert_eq!(back.images[0].layers, line.images[0].layers);
        let other = serde_json::json!({"task": "image-to-image"});
        assert!(
            open_results::<ClassDraws>(dir.path(), &other, &serde_json::json!({}), |r| r.class)
                .is_err()
        );
    }

    /// The shipped judge keeps the accuracy its metrics file claims (over 98%).
    #[test]
    fn shipped_judge_reads_mnist_test_digits() {
        let judge = DigitJudge::builtin().unwrap();
        let test = spae_datasets::load_spec("mnist", Split::Test, 1, 28).unwrap();
        let images =
            LabeledPixels::new(&test.pixels, &test.labels, test.channels, test.size).unwrap();
        let acc = spae_core::judge::accuracy(&judge, &images).unwrap();
        assert!(acc > 0.98, "judge accuracy {acc}");
        let claimed: serde_json::Value =
            serde_json::from_str(include_str!("../../../checkpoints/judge-mnist.json")).unwrap();
        let claimed = claimed["mnist_test_accuracy"].as_f64().unwrap();
        assert!((acc - claimed).abs() < 0.002, "{acc} vs {claimed}");
    }
}
