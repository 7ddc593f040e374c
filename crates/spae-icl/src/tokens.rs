//! `init`, `tokenize`, `decode`, `reconstruct`: images <-> words with a tokenizer checkpoint.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use spae_core::imageio::{load_image, save_png};
use spae_core::{ModelConfig, PyramidConfig, QuantizerKind, SpaeModel, TokenPyramid};

use crate::cli::{
    CheckpointArg, DecodeArgs, Format, InitArgs, ModelArgs, ReconstructArgs, TokenizeArgs,
    VocabSpec,
};

/// Codebook cap for `init` unless --max-entries says otherwise (0 = no cap): nearest-neighbour
/// cost grows with it, and the first 4,096 filtered words are the LLM's most frequent ones.
const DEFAULT_INIT_ENTRIES: usize = 4_096;

/// A freshly initialised model as `args` describe it.
pub fn build(args: &ModelArgs) -> Result<SpaeModel> {
    build_on(args, &Device::Cpu)
}

/// [`build`] with the model's tensors on `device` (the codebook is read on the CPU).
pub fn build_on(args: &ModelArgs, device: &Device) -> Result<SpaeModel> {
    let mut spec: VocabSpec = args.spec.clone();
    spec.max_entries = match spec.max_entries {
        None => Some(DEFAULT_INIT_ENTRIES),
        Some(0) => None,
        some => some,
    };
    let quantizer = match args.quantizer.as_str() {
        "saq" => QuantizerKind::Saq,
        "rq" => QuantizerKind::Rq,
        other => bail!("--quantizer {other:?}: expected saq or rq"),
    };
    let mut codebook = spec.load(&Device::Cpu)?;
    if args.project_dim > 0 && args.project_dim < codebook.dim() {
        codebook = codebook.project_pca(args.project_dim)?;
    }
    let patch = match args.arch.as_str() {
        "patch" => ModelConfig::mnist(codebook.dim()).patch,
        "conv" => None,
        other => bail!("--arch {other:?}: expected patch or conv"),
    };
    let levels = match &patch {
        // A patch of p pixels covers what log2(p) halvings do.
        Some(p) => p.patch.trailing_zeros() as usize + 1,
        None => args.widths.len(),
    };
    let grid = ModelConfig::grid_for(args.image_size, levels, &args.layers);
    let pyramid = PyramidConfig::new(grid, args.layers.clone())
        .with_context(|| format!("--layers {:?} on a {grid}x{grid} grid", args.layers))?;
    let cfg = ModelConfig {
        image_size: args.image_size,
        in_channels: args.channels,
        channels: if patch.is_some() {
            vec![]
        } else {
            args.widths.clone()
        },
        res_blocks: if patch.is_some() { 0 } else { 1 },
        embed_dim: codebook.dim(),
        pyramid,
        quantizer,
        global_context: true,
        patch,
        decoder_input: spae_core::model::DecoderInput::Mean,
    };
    Ok(SpaeModel::new_seeded(cfg, codebook, device, args.seed)?)
}

pub fn init(args: InitArgs) -> Result<()> {
    let model = build(&args.model)?;
    model.save(&args.output)?;
    let cfg = model.config();
    eprintln!(
        "wrote {} (untrained: {} parameters, {} codebook entries, {}x{} grid, layers {:?})",
        args.output.display(),
        model.num_parameters(),
        model.codebook().len(),
        cfg.grid(),
        cfg.grid(),
        cfg.pyramid.layers
    );
    Ok(())
}

/// The default tokenizer, built into the binary: trained on MNIST + Fashion-MNIST with the
/// Gemma 3 vocabulary (`checkpoints/README.md` says how, and what it measures).
const DEFAULT_CHECKPOINT: &[u8] =
    include_bytes!("../../../checkpoints/spae-gemma3-mnist-fashion.safetensors");

/// How the built-in checkpoint is named in messages.
pub const DEFAULT_CHECKPOINT_LABEL: &str = "<built-in spae-gemma3-mnist-fashion>";

/// The easy-VQA tokenizer, built in for `caption`, `vqa` and `eval-vqa`: 32x32 RGB (easy-VQA's
/// 64x64 images resized), Gemma 3 vocabulary (`checkpoints/README.md`).
const EASY_VQA_CHECKPOINT: &[u8] =
    include_bytes!("../../../checkpoints/spae-gemma3-easy-vqa.safetensors");

/// The checkpoints built into the binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuiltIn {
    /// MNIST + Fashion-MNIST, 28x28 gray: the default everywhere else.
    MnistFashion,
    /// easy-VQA at 32x32 RGB: the default of captioning and VQA.
    EasyVqa,
}

impl BuiltIn {
    fn bytes(self) -> &'static [u8] {
        match self {
            BuiltIn::MnistFashion => DEFAULT_CHECKPOINT,
            BuiltIn::EasyVqa => EASY_VQA_CHECKPOINT,
        }
    }

    fn label(self) -> &'static str {
        match self {
            BuiltIn::MnistFashion => DEFAULT_CHECKPOINT_LABEL,
            BuiltIn::EasyVqa => "<built-in spae-gemma3-easy-vqa>",
        }
    }
}

/// The tokenizer to use: --checkpoint / $SPAE_CHECKPOINT, else the built-in one; with the
/// name it goes by in messages.
pub fn load_checkpoint(arg: &CheckpointArg, device: &Device) -> Result<(SpaeModel, String)> {
    load_checkpoint_or(arg, BuiltIn::MnistFashion, device)
}

/// As [`load_checkpoint`], with `builtin` when none is given.
pub fn load_checkpoint_or(
    arg: &CheckpointArg,
    builtin: BuiltIn,
    device: &Device,
) -> Result<(SpaeModel, String)> {
    let (model, label) = match &arg.checkpoint {
        Some(p) => (SpaeModel::load(p, device)?, p.display().to_string()),
        None => (
            SpaeModel::load_bytes(builtin.bytes(), Path::new(builtin.label()), device)?,
            builtin.label().to_string(),
        ),
    };
    tracing::debug!(?model, "loaded {label}");
    Ok((model, label))
}

/// sha256 of the checkpoint `arg` names (the built-in one's bytes when none is given), so a
/// result file says exactly which tokenizer produced it.
pub fn checkpoint_sha256(arg: &CheckpointArg) -> Result<String> {
    checkpoint_sha256_or(arg, BuiltIn::MnistFashion)
}

/// As [`checkpoint_sha256`], with `builtin` when none is given.
pub fn checkpoint_sha256_or(arg: &CheckpointArg, builtin: BuiltIn) -> Result<String> {
    match &arg.checkpoint {
        Some(p) => crate::run::sha256_file(p),
        None => Ok(crate::run::sha256_hex(builtin.bytes())),
    }
}

fn load_model(arg: &CheckpointArg) -> Result<SpaeModel> {
    Ok(load_checkpoint(arg, &Device::Cpu)?.0)
}

fn load_images(model: &SpaeModel, paths: &[PathBuf]) -> Result<Tensor> {
    let cfg = model.config();
    let images: Vec<Tensor> = paths
        .iter()
        .map(|p| load_image(p, cfg.in_channels, cfg.image_size))
        .collect::<spae_core::Result<_>>()?;
    Ok(Tensor::stack(&images, 0)?)
}

fn depth_or_all(model: &SpaeModel, layers: Option<usize>) -> Result<usize> {
    let depth = layers.unwrap_or(model.config().pyramid.depth());
    model
        .config()
        .pyramid
        .check_depth(depth)
        .context("--layers")?;
    Ok(depth)
}

pub fn tokenize(args: TokenizeArgs) -> Result<()> {
    let model = load_model(&args.ckpt)?;
    let depth = depth_or_all(&model, args.layers)?;
    let images = load_images(&model, &args.images)?;
    let pyramids = model.tokenize(&images, depth)?;
    match args.format {
        Format::Json => {
            let items: Vec<_> = args
                .images
                .iter()
                .zip(&pyramids)
                .map(|(p, t)| serde_json::json!({ "image": p, "layers": t.layers }))
                .collect();
            println!("{}", serde_json::to_string_pretty(&items)?);
        }
        Format::Text => {
            for (i, (p, t)) in args.images.iter().zip(&pyramids).enumerate() {
                if i > 0 {
                    println!();
                }
                if args.images.len() > 1 {
                    println!("# {}", p.display());
                }
                println!("{}", t.to_text());
            }
        }
    }
    Ok(())
}

/// Token pyramids from tokenize's JSON (one object or a list), or from words: one image per
/// block of lines (blocks separated by blank lines; `#` lines are comments), words in layer order.
pub fn parse_tokens(input: &str, model: &SpaeModel) -> Result<Vec<TokenPyramid>> {
    let trimmed = input.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let value: serde_json::Value =
            serde_json::from_str(trimmed).context("tokens are not valid JSON")?;
        let items = match value {
            serde_json::Value::Array(a) => a,
            other => vec![other],
        };
        return items
            .into_iter()
            .map(|v| serde_json::from_value(v).context("expected objects with a \"layers\" list"))
            .collect();
    }
    let mut out = Vec::new();
    for block in trimmed.split("\n\n") {
        let words: Vec<&str> = block
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .flat_map(str::split_whitespace)
            .filter(|w| *w != "|")
            .collect();
        if words.is_empty() {
            continue;
        }
        let n = out.len() + 1;
        let p = TokenPyramid::from_words(&words, model.codebook(), &model.config().pyramid.layers)
            .with_context(|| format!("image {n}"))?;
        out.push(p);
    }
    if out.is_empty() {
        bail!("no words to decode");
    }
    Ok(out)
}

pub fn decode(args: DecodeArgs) -> Result<()> {
    let model = load_model(&args.ckpt)?;
    let mut text = String::new();
    match args.input.as_deref().filter(|p| *p != Path::new("-")) {
        None => {
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading stdin")?;
        }
        Some(p) => {
            text = std::fs::read_to_string(p).with_context(|| format!("{}", p.display()))?;
        }
    }
    let pyramids = parse_tokens(&text, &model)?;
    let images = model.detokenize(&pyramids)?;
    save_png(&images, &args.output)?;
    eprintln!(
        "wrote {} ({} image(s))",
        args.output.display(),
        pyramids.len()
    );
    Ok(())
}

pub fn reconstruct(args: ReconstructArgs) -> Result<()> {
    let model = load_model(&args.ckpt)?;
    let depth = depth_or_all(&model, args.layers)?;
    let images = load_images(&model, std::slice::from_ref(&args.image))?;
    let recon = model.reconstruct(&images, depth)?;
    let mse: f32 = (&recon - &images)?.sqr()?.mean_all()?.to_scalar()?;
    let psnr = -10.0 * mse.max(1e-10).log10();
    save_png(&recon, &args.output)?;
    eprintln!(
        "wrote {} ({} layers, {} tokens, PSNR {psnr:.2} dB)",
        args.output.display(),
        depth,
        model.config().pyramid.tokens_up_to(depth)
    );
    Ok(())
}
