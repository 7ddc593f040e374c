//! `fetch`, `vocab`, `init`, `train`, `tokenize`, `decode`, `reconstruct`: a tokenizer's
//! vocabulary, training, and images <-> words.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use spae_core::imageio::{load_image, save_png};
use spae_core::SpaeModel;
use spae_eval::tokenizer::{self, ArchConfig, VocabConfig};
use spae_eval::train::{GrowConfig, TrainRunConfig};
use spae_eval::CheckpointRef;

use crate::cli::{
    CheckpointArg, DecodeArgs, FetchArgs, Format, GrowArgs, InitArgs, ModelArgs, ReconstructArgs,
    TokenizeArgs, TrainArgs, VocabArgs, VocabSpec,
};

impl VocabSpec {
    pub fn config(&self) -> VocabConfig {
        VocabConfig {
            vocab: self.vocab.clone(),
            max_entries: self.max_entries,
            max_token_id: self.max_token_id,
            min_len: self.min_len,
            keep_case_duplicates: self.keep_case_duplicates,
            include_words: self.include_words.clone(),
            dictionary: self.dictionary.clone(),
        }
    }
}

impl ModelArgs {
    fn config(&self) -> ArchConfig {
        ArchConfig {
            vocab: self.spec.config(),
            image_size: self.image_size,
            channels: self.channels,
            widths: self.widths.clone(),
            layers: self.layers.clone(),
            project_dim: self.project_dim,
            arch: self.arch.clone(),
            quantizer: self.quantizer.clone(),
            seed: self.seed,
            backbone_size: self.backbone_size,
            prior: None,
        }
    }
}

impl CheckpointArg {
    pub fn builtin(&self) -> CheckpointRef {
        CheckpointRef::or_default(self.checkpoint.clone())
    }
}

pub fn fetch(args: FetchArgs) -> Result<()> {
    let cache = spae_assets::AssetCache::from_env();
    for name in &args.assets {
        let path = cache
            .fetch_named(name)
            .with_context(|| format!("fetching {name}"))?;
        println!("{name}\t{}", path.display());
    }
    Ok(())
}

pub fn vocab(args: VocabArgs) -> Result<()> {
    let cb = args.spec.config().load(&Device::Cpu)?;
    let sample: Vec<&str> = (0..cb.len().min(12)).map(|i| cb.word(i)).collect();
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::json!({
                "vocab": args.spec.vocab,
                "vocab_size": cb.info().vocab_size,
                "entries": cb.len(),
                "dim": cb.dim(),
                "marker": cb.info().marker,
                "filter": cb.info().filter,
                "first_words": sample,
            })
        ),
        Format::Text => {
            println!("vocab       {}", args.spec.vocab);
            println!("vocab size  {}", cb.info().vocab_size);
            println!("entries     {} (after the filter)", cb.len());
            println!("dim         {}", cb.dim());
            println!("first words {}", sample.join(" "));
        }
    }
    Ok(())
}

pub fn init(args: InitArgs) -> Result<()> {
    let model = tokenizer::build(&args.model.config(), &Device::Cpu)?;
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

impl GrowArgs {
    fn config(&self) -> GrowConfig {
        GrowConfig {
            add_layers: self.add_layers.clone(),
            dec_blocks: self.dec_blocks,
            fine_blocks: self.fine_blocks,
            decoder_input: self.decoder_input.clone(),
        }
    }
}

pub fn train(args: TrainArgs) -> Result<()> {
    let cfg = TrainRunConfig {
        arch: args.model.config(),
        data: args.data,
        steps: args.steps,
        scorer: args.scorer,
        semantic_layers: args.semantic_layers,
        semantic_weight: args.semantic_weight,
        semantic_ramp: args.semantic_ramp,
        semantic_tau: args.semantic_tau,
        semantic_top_k: args.semantic_top_k,
        semantic_per_class: args.semantic_per_class,
        batch_size: args.batch_size,
        lr: args.lr,
        warmup: args.warmup,
        full_depth_share: args.full_depth_share,
        checkpoint_every: args.checkpoint_every,
        out: args.out,
        resume: args.resume,
        init: args.init,
        freeze_encoder: args.freeze_encoder,
        grow: args.grow.config(),
        include_class_words: args.include_class_words,
        scorer_image_size: args.scorer_image_size,
        usage_weight: args.usage_weight,
        usage_tau: args.usage_tau,
        prior: args.prior,
        prior_temperature: args.prior_temperature,
    };
    let ckpt = spae_eval::train::train(&cfg, &crate::device(&args.device)?)?;
    eprintln!("wrote {}", ckpt.display());
    Ok(())
}

fn load_model(arg: &CheckpointArg) -> Result<SpaeModel> {
    Ok(arg.builtin().load(&Device::Cpu)?.0)
}

fn load_images(model: &SpaeModel, paths: &[PathBuf]) -> Result<Tensor> {
    let cfg = model.config();
    let images: Vec<Tensor> = paths
        .iter()
        .map(|p| load_image(p, cfg.in_channels, cfg.image_size))
        .collect::<spae_core::Result<_>>()?;
    Ok(Tensor::stack(&images, 0)?)
}

pub fn tokenize(args: TokenizeArgs) -> Result<()> {
    let model = load_model(&args.ckpt)?;
    let depth = tokenizer::depth_or_all(&model, args.layers)?;
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
    let pyramids = tokenizer::parse_tokens(&text, &model)?;
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
    let depth = tokenizer::depth_or_all(&model, args.layers)?;
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
