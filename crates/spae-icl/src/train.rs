//! `spae-icl train`: encoder/decoder training on a data set, resumable, with metrics as JSONL.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use spae_assets::AssetCache;
use spae_core::{DecoderInput, SemanticConfig, SpaeModel, TrainConfig, Trainer};
use spae_datasets::{easy_vqa, fashion_mnist, image_folder, mnist, LabeledImages, Split};

use crate::cli::{GrowArgs, TrainArgs};

/// Load data by name: `mnist`, `fashion-mnist`, `easy-vqa`, or `folder:DIR`; several joined
/// by `+` become one set (labels shifted, class names concatenated), at `size` x `size`.
pub fn load_data(spec: &str, split: Split, channels: usize, size: usize) -> Result<LabeledImages> {
    check_data_spec(spec)?;
    let cache = AssetCache::from_env();
    let mut sets = Vec::new();
    for part in spec.split('+') {
        let set = if let Some(dir) = part.strip_prefix("folder:") {
            image_folder(Path::new(dir), channels, size)?
        } else {
            match part {
                "mnist" => mnist(&cache, split)?,
                "fashion-mnist" => fashion_mnist(&cache, split)?,
                "easy-vqa" => easy_vqa(&cache, split)?.by_colour_and_shape(),
                _ => unreachable!("checked by check_data_spec"),
            }
        };
        // A fetched set at another side is resized to the one asked for (easy-VQA's 64x64
        // at 32, say); the folder loader already resized.
        sets.push(set.resized(size));
    }
    Ok(LabeledImages::concat(sets)?)
}

/// Reject an unknown `--data` before any expensive work.
fn check_data_spec(spec: &str) -> Result<()> {
    for part in spec.split('+') {
        if !(matches!(part, "mnist" | "fashion-mnist" | "easy-vqa") || part.starts_with("folder:"))
        {
            bail!(
                "--data {spec:?}: {part:?} is not a data set; expected mnist, fashion-mnist, easy-vqa, \
                 or folder:DIR with DIR/<class>/*.png|jpg, joined by '+'"
            )
        }
    }
    Ok(())
}

/// `model` grown as the flags ask (`SpaeModel::grow_decoder`); unchanged without them.
fn grow(model: SpaeModel, g: &GrowArgs) -> Result<SpaeModel> {
    if !g.any() {
        return Ok(model);
    }
    let mut to = model.config().clone();
    to.pyramid.layers.extend_from_slice(&g.add_layers);
    if let Some(input) = g.decoder_input.as_deref() {
        to.decoder_input = match input {
            "layers" => DecoderInput::Layers,
            _ => DecoderInput::Mean,
        };
    }
    if g.dec_blocks.is_some() || g.fine_blocks.is_some() {
        let Some(p) = to.patch.as_mut() else {
            bail!(
                "--dec-blocks/--fine-blocks: this model has the conv decoder, which does not grow"
            );
        };
        p.dec_blocks = g.dec_blocks.unwrap_or(p.dec_blocks);
        p.fine_blocks = g.fine_blocks.unwrap_or(p.fine_blocks);
    }
    if to == *model.config() {
        return Ok(model);
    }
    let grown = model.grow_decoder(&to).context(
        "growing the model (--add-layers, --dec-blocks, --fine-blocks, --decoder-input)",
    )?;
    tracing::info!(
        layers = ?to.pyramid.layers,
        decoder = ?to.patch,
        input = ?to.decoder_input,
        parameters = grown.num_parameters(),
        "model grown; it starts out decoding every token pyramid as before"
    );
    Ok(grown)
}

#[derive(serde::Serialize, serde::Deserialize)]
struct TrainState {
    step: usize,
    config: TrainConfig,
    data: String,
}

pub fn train(args: TrainArgs) -> Result<()> {
    check_data_spec(&args.data)?;
    if !(0.0..=1.0).contains(&args.full_depth_share) {
        bail!(
            "--full-depth-share {}: expected a share between 0 and 1",
            args.full_depth_share
        );
    }
    if args.freeze_encoder && args.init.is_none() && !args.resume {
        bail!("--freeze-encoder keeps a trained encoder: give it one with --init CHECKPOINT (or --resume)");
    }
    let device = crate::device(&args.device)?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("{}", args.out.display()))?;
    let ckpt = args.out.join("checkpoint.safetensors");
    let state_path = args.out.join("train.json");
    let cfg = TrainConfig {
        steps: args.steps,
        batch_size: args.batch_size,
        lr: args.lr,
        warmup: args.warmup,
        full_depth_share: args.full_depth_share,
        freeze_encoder: args.freeze_encoder,
        seed: args.model.seed,
        // The semantic loss moves only the encoder.
        semantic: (args.scorer != "none" && !args.freeze_encoder).then_some(SemanticConfig {
            layers: args.semantic_layers,
            weight: args.semantic_weight,
            ramp_steps: args.semantic_ramp,
            tau: args.semantic_tau,
        }),
        ..TrainConfig::default()
    };
    let (model, start) = if args.resume {
        let state: TrainState = serde_json::from_str(
            &std::fs::read_to_string(&state_path)
                .with_context(|| format!("--resume: {}", state_path.display()))?,
        )
        .with_context(|| format!("{}", state_path.display()))?;
        (SpaeModel::load(&ckpt, &device)?, state.step)
    } else if let Some(init) = &args.init {
        let model =
            SpaeModel::load(init, &device).with_context(|| format!("--init {}", init.display()))?;
        (grow(model, &args.grow)?, 0)
    } else {
        let model = crate::tokens::build_on(&args.model, &device)?;
        (grow(model, &args.grow)?, 0)
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

    if args.freeze_encoder {
        tracing::info!("encoder frozen: the decoder trains on reconstruction alone (no semantic loss, no commitment)");
    }
    // `cfg.semantic` is set exactly when a scorer is named and the encoder trains.
    let scorer = match &cfg.semantic {
        None => None,
        Some(_) => Some(
            crate::scorer::load_scorer(&args.scorer, model.codebook())
                .with_context(|| format!("--scorer {}", args.scorer))?,
        ),
    };
    let mut targets = match &scorer {
        Some(s) => Some(crate::scorer::ImageTargets::new(
            s,
            &data,
            args.semantic_top_k,
            0.02,
        )?),
        None => None,
    };
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
        let t = match &mut targets {
            Some(t) => Some(t.batch(&data, &idx, model.device())?),
            None => None,
        };
        let loss = trainer.step_with(&model, &x, t.as_ref())?;
        writeln!(metrics, "{}", serde_json::to_string(&loss)?)?;
        bar.set_position(step as u64 + 1);
        bar.set_message(format!(
            "recon {:.4} commit {:.4} sem {:.3} depth {}",
            loss.recon, loss.commit, loss.semantic, loss.depth
        ));
        if (step + 1) % args.checkpoint_every == 0 || step + 1 == cfg.steps {
            save(step + 1)?;
        }
    }
    bar.finish();
    eprintln!("wrote {}", ckpt.display());
    Ok(())
}
