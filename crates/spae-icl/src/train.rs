//! `spae-icl train`: encoder/decoder training on a data set, resumable, with metrics as JSONL.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use indicatif::{ProgressBar, ProgressStyle};
use spae_assets::AssetCache;
use spae_core::{SpaeModel, TrainConfig, Trainer};
use spae_datasets::{fashion_mnist, image_folder, LabeledImages, Split};

use crate::cli::TrainArgs;

/// Load a training set by name: `fashion-mnist`, or `folder:DIR`.
pub fn load_data(spec: &str, split: Split, channels: usize, size: usize) -> Result<LabeledImages> {
    check_data_spec(spec)?;
    if let Some(dir) = spec.strip_prefix("folder:") {
        return Ok(image_folder(Path::new(dir), channels, size)?);
    }
    Ok(fashion_mnist(&AssetCache::from_env(), split)?)
}

/// Reject an unknown `--data` before any expensive work.
fn check_data_spec(spec: &str) -> Result<()> {
    if spec == "fashion-mnist" || spec.starts_with("folder:") {
        return Ok(());
    }
    bail!("--data {spec:?}: expected fashion-mnist, or folder:DIR with DIR/<class>/*.png|jpg")
}

#[derive(serde::Serialize, serde::Deserialize)]
struct TrainState {
    step: usize,
    config: TrainConfig,
    data: String,
}

pub fn train(args: TrainArgs) -> Result<()> {
    check_data_spec(&args.data)?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("{}", args.out.display()))?;
    let ckpt = args.out.join("checkpoint.safetensors");
    let state_path = args.out.join("train.json");
    let cfg = TrainConfig {
        steps: args.steps,
        batch_size: args.batch_size,
        lr: args.lr,
        warmup: args.warmup,
        seed: args.model.seed,
        ..TrainConfig::default()
    };
    let (model, start) = if args.resume {
        let state: TrainState = serde_json::from_str(
            &std::fs::read_to_string(&state_path)
                .with_context(|| format!("--resume: {}", state_path.display()))?,
        )
        .with_context(|| format!("{}", state_path.display()))?;
        (SpaeModel::load(&ckpt, &Device::Cpu)?, state.step)
    } else {
        (crate::tokens::build(&args.model)?, 0)
    };
    let mc = model.config().clone();
    let data = load_data(&args.data, Split::Train, mc.in_channels, mc.image_size)?;
    if data.size != mc.image_size || data.channels != mc.in_channels {
        bail!(
            "{} images are {}x{}x{}, the model takes {}x{}x{}",
            data.name,
            data.channels,
            data.size,
            data.size,
            mc.in_channels,
            mc.image_size,
            mc.image_size
        );
    }
    tracing::info!(
        ?data,
        parameters = model.num_parameters(),
        start,
        "training"
    );

    let mut trainer = Trainer::new(&model, cfg.clone())?;
    trainer.skip_to(start);
    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(args.out.join("metrics.jsonl"))
        .context("metrics.jsonl")?;
    let bar = ProgressBar::new(cfg.steps as u64).with_position(start as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let save = |step: usize| -> Result<()> {
        model.save(&ckpt)?;
        let state = TrainState {
            step,
            config: cfg.clone(),
            data: args.data.clone(),
        };
        let tmp = args.out.join("train.json.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(&state)?)?;
        std::fs::rename(&tmp, &state_path)?;
        Ok(())
    };
    for step in start..cfg.steps {
        let idx = trainer.sample_batch(data.len(), cfg.batch_size);
        let x = data.batch(&idx, model.device())?;
        let loss = trainer.step(&model, &x)?;
        writeln!(metrics, "{}", serde_json::to_string(&loss)?)?;
        bar.set_position(step as u64 + 1);
        bar.set_message(format!(
            "recon {:.4} commit {:.4} depth {}",
            loss.recon, loss.commit, loss.depth
        ));
        if (step + 1) % args.checkpoint_every == 0 || step + 1 == cfg.steps {
            save(step + 1)?;
        }
    }
    bar.finish();
    eprintln!("wrote {}", ckpt.display());
    Ok(())
}
