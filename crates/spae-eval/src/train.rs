//! A training run of the tokenizer (paper Sec. 3.4): a new model, a checkpoint to start from
//! (`init`, a second phase), or the run in `out` resumed; checkpoints written atomically every
//! few steps, metrics as JSONL.

use std::io::Write;
use std::path::PathBuf;

use candle_core::Device;
use serde::{Deserialize, Serialize};
use spae_core::{DecoderInput, SemanticConfig, SpaeModel, TrainConfig, Trainer, UsageConfig};
use spae_datasets::Split;

use crate::bail;
use crate::error::{Context, Result};
use crate::tokenizer::ArchConfig;

/// Growth of a model before training (`SpaeModel::grow_decoder`): a second-phase decoder can
/// be larger than the one the first phase trained, and the pyramid deeper, without moving any
/// word.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GrowConfig {
    /// Layers appended to the pyramid; SAQ quantizes them after the others.
    pub add_layers: Vec<usize>,
    /// Residual blocks of the decoder on the grid.
    pub dec_blocks: Option<usize>,
    /// Residual blocks of the decoder's finer stage.
    pub fine_blocks: Option<usize>,
    /// `mean` (SAQ's running mean, the paper's) or `layers` (each layer's words side by side).
    pub decoder_input: Option<String>,
}

impl GrowConfig {
    pub fn any(&self) -> bool {
        !self.add_layers.is_empty()
            || self.dec_blocks.is_some()
            || self.fine_blocks.is_some()
            || self.decoder_input.is_some()
    }
}

/// One training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainRunConfig {
    /// The architecture of a new model (unused with `init` or `resume`).
    pub arch: ArchConfig,
    /// A data spec (`mnist+fashion-mnist`, `easy-vqa`, `folder:DIR`).
    pub data: String,
    pub steps: usize,
    /// Scorer of the semantic loss: `default` (built in), a path, or `none`.
    pub scorer: String,
    pub semantic_layers: usize,
    pub semantic_weight: f64,
    pub semantic_ramp: usize,
    pub semantic_tau: f64,
    pub semantic_top_k: usize,
    /// Semantic targets per class, not per image
    /// (`spae_core::scorer::training::ImageTargets::per_class`).
    pub semantic_per_class: bool,
    pub batch_size: usize,
    /// Peak learning rate (linear warmup, cosine decay to a tenth).
    pub lr: f64,
    pub warmup: usize,
    /// Share of steps that decode the full pyramid.
    pub full_depth_share: f64,
    pub checkpoint_every: usize,
    /// checkpoint.safetensors, metrics.jsonl, train.json.
    pub out: PathBuf,
    pub resume: bool,
    pub init: Option<PathBuf>,
    pub freeze_encoder: bool,
    pub grow: GrowConfig,
    /// Add the words of the training data's class names to a new model's codebook (those the
    /// vocabulary has as whole-word entries), like `include_words`: the first layers can
    /// then name what the images show. Only the training split's names are read, so held-out
    /// concepts never choose the codebook.
    #[serde(default)]
    pub include_class_words: bool,
    /// Side of the images the scorer reads (the training set loaded again at this side), when
    /// it is not the model's: a teacher that sees more pixels than the tokenizer.
    #[serde(default)]
    pub scorer_image_size: Option<usize>,
    /// Weight of the codebook-usage term on the first layer (`spae_core::UsageConfig`); 0: off.
    #[serde(default)]
    pub usage_weight: f64,
    /// Its temperature over squared distances.
    #[serde(default = "default_usage_tau")]
    pub usage_tau: f64,
    /// A new model's encoder starts from this teacher's relevance-weighted codebook rows
    /// (`spae_core::model::PriorConfig`; a scorer spec, reading the model's own images).
    #[serde(default)]
    pub prior: Option<String>,
    /// The prior's softmax temperature over the teacher's cosines.
    #[serde(default = "default_prior_temperature")]
    pub prior_temperature: f64,
}

pub fn default_prior_temperature() -> f64 {
    0.01
}

fn default_usage_tau() -> f64 {
    0.1
}

impl Default for TrainRunConfig {
    fn default() -> Self {
        Self {
            arch: ArchConfig::default(),
            data: "mnist+fashion-mnist".into(),
            steps: 2000,
            scorer: "default".into(),
            semantic_layers: 2,
            semantic_weight: 0.05,
            semantic_ramp: 300,
            semantic_tau: 0.1,
            semantic_top_k: 10,
            semantic_per_class: false,
            batch_size: 64,
            lr: 1e-3,
            warmup: 100,
            full_depth_share: 0.0,
            checkpoint_every: 500,
            out: PathBuf::from("runs/train"),
            resume: false,
            init: None,
            freeze_encoder: false,
            grow: GrowConfig::default(),
            include_class_words: false,
            scorer_image_size: None,
            usage_weight: 0.0,
            usage_tau: default_usage_tau(),
            prior: None,
            prior_temperature: default_prior_temperature(),
        }
    }
}

/// `model` grown as the flags ask (`SpaeModel::grow_decoder`); unchanged without them.
fn grow(model: SpaeModel, g: &GrowConfig) -> Result<SpaeModel> {
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

/// The words of `class_names` ("police car": police, car) added to `arch`'s `include_words`,
/// each once, where the vocabulary has it as a whole-word entry; the others are logged.
pub fn include_class_words(arch: &mut ArchConfig, class_names: &[String]) -> Result<()> {
    let mut words: Vec<String> = Vec::new();
    for name in class_names {
        for w in name.split(|c: char| !c.is_ascii_alphabetic()) {
            let w = w.to_ascii_lowercase();
            if w.len() >= arch.vocab.min_len.max(1) && !words.contains(&w) {
                words.push(w);
            }
        }
    }
    let (have, missing) = arch.vocab.whole_words(&words)?;
    tracing::info!(
        included = have.len(),
        missing = missing.len(),
        "class-name words in the codebook; without a whole-word entry: {}",
        missing.join(", ")
    );
    for w in have {
        if !arch.vocab.include_words.contains(&w) {
            arch.vocab.include_words.push(w);
        }
    }
    Ok(())
}

#[derive(serde::Serialize, serde::Deserialize)]
struct TrainState {
    step: usize,
    config: TrainConfig,
    data: String,
}

/// Trains as `args` says on `device`; returns the checkpoint written.
pub fn train(args: &TrainRunConfig, device: &Device) -> Result<PathBuf> {
    spae_datasets::check_spec(&args.data)?;
    if !(0.0..=1.0).contains(&args.full_depth_share) {
        bail!(
            "--full-depth-share {}: expected a share between 0 and 1",
            args.full_depth_share
        );
    }
    if args.prior.is_some() && (args.init.is_some() || args.resume) {
        bail!("--prior is part of a new model's architecture: it cannot be added with --init or --resume");
    }
    if args.freeze_encoder && args.init.is_none() && !args.resume {
        bail!("--freeze-encoder keeps a trained encoder: give it one with --init CHECKPOINT (or --resume)");
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let ckpt = args.out.join("checkpoint.safetensors");
    let state_path = args.out.join("train.json");
    let cfg = TrainConfig {
        steps: args.steps,
        batch_size: args.batch_size,
        lr: args.lr,
        warmup: args.warmup,
        full_depth_share: args.full_depth_share,
        freeze_encoder: args.freeze_encoder,
        seed: args.arch.seed,
        // The semantic loss moves only the encoder.
        semantic: (args.scorer != "none" && !args.freeze_encoder).then_some(SemanticConfig {
            layers: args.semantic_layers,
            weight: args.semantic_weight,
            ramp_steps: args.semantic_ramp,
            tau: args.semantic_tau,
        }),
        usage: (args.usage_weight > 0.0).then_some(UsageConfig {
            weight: args.usage_weight,
            tau: args.usage_tau,
        }),
        ..TrainConfig::default()
    };
    let (model, start) = if args.resume {
        let state: TrainState = serde_json::from_str(
            &std::fs::read_to_string(&state_path)
                .with_context(|| format!("--resume: {}", state_path.display()))?,
        )
        .with_context(|| format!("{}", state_path.display()))?;
        let mut model = SpaeModel::load(&ckpt, device)?;
        crate::tokenizer::attach_frozen(&mut model)?;
        (model, state.step)
    } else if let Some(init) = &args.init {
        let mut model =
            SpaeModel::load(init, device).with_context(|| format!("--init {}", init.display()))?;
        crate::tokenizer::attach_frozen(&mut model)
            .with_context(|| format!("--init {}", init.display()))?;
        (grow(model, &args.grow)?, 0)
    } else {
        let mut arch = args.arch.clone();
        if args.include_class_words {
            let names =
                spae_datasets::load_spec(&args.data, Split::Train, arch.channels, arch.image_size)?
                    .class_names;
            include_class_words(&mut arch, &names)?;
        }
        if let Some(spec) = &args.prior {
            arch.prior = Some(
                crate::tokenizer::prior_config(spec, &args.data, args.prior_temperature)
                    .with_context(|| format!("--prior {spec}"))?,
            );
        }
        let model = crate::tokenizer::build(&arch, device)?;
        (grow(model, &args.grow)?, 0)
    };
    let mc = model.config().clone();
    let data = spae_datasets::load_spec(&args.data, Split::Train, mc.in_channels, mc.image_size)?;
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
            crate::scorer::load_scorer(&args.scorer, model.codebook(), &args.data)
                .with_context(|| format!("--scorer {}", args.scorer))?,
        ),
    };
    // The scorer's view of the same images, in the same order.
    let seen = match args.scorer_image_size {
        Some(side) if side != mc.image_size && scorer.is_some() => {
            let seen = spae_datasets::load_spec(&args.data, Split::Train, mc.in_channels, side)?;
            if seen.len() != data.len() {
                bail!(
                    "--scorer-image-size {side}: {} has {} images at that size, {} at {}",
                    args.data,
                    seen.len(),
                    data.len(),
                    mc.image_size
                );
            }
            Some(seen)
        }
        _ => None,
    };
    let pixels = seen.as_ref().unwrap_or(&data).labeled_pixels()?;
    let mut targets = match &scorer {
        Some(s) => Some(
            spae_core::scorer::training::ImageTargets::new(
                s,
                &data.class_names,
                args.semantic_top_k,
                0.02,
            )?
            .per_class(args.semantic_per_class),
        ),
        None => None,
    };
    let mut frozen = (mc.backbone.is_some() || mc.prior.is_some()).then(FrozenInputsCache::default);
    let mut trainer = Trainer::new(&model, cfg.clone())?;
    trainer.skip_to(start);
    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(args.out.join("metrics.jsonl"))
        .context("metrics.jsonl")?;
    let bar = crate::progress::bar(cfg.steps as u64, "training steps");
    bar.inc(start as u64);
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
            Some(t) => Some(t.batch(&pixels, &idx, model.device())?),
            None => None,
        };
        let f = match &mut frozen {
            Some(f) => f.batch(&model, &data, &idx)?,
            None => spae_core::FrozenInputs::default(),
        };
        let loss = trainer.step_with_frozen(&model, &x, &f, t.as_ref())?;
        writeln!(metrics, "{}", serde_json::to_string(&loss)?)?;
        bar.inc(1);
        bar.set_message(format!(
            "recon {:.4} commit {:.4} sem {:.3} usage {:.3} depth {}",
            loss.recon, loss.commit, loss.semantic, loss.usage, loss.depth
        ));
        if (step + 1) % args.checkpoint_every == 0 || step + 1 == cfg.steps {
            save(step + 1)?;
        }
    }
    bar.finish_and_clear();
    Ok(ckpt)
}

/// What the frozen networks read of each training image (backbone features, the teacher's
/// prior), computed the first time a batch draws it and kept: a run draws every image many
/// times, and these never change.
#[derive(Default)]
struct FrozenInputsCache {
    rows: std::collections::HashMap<usize, spae_core::FrozenInputs>,
}

impl FrozenInputsCache {
    /// The inputs of images `idx` of `data`, in order.
    fn batch(
        &mut self,
        model: &SpaeModel,
        data: &spae_datasets::LabeledImages,
        idx: &[usize],
    ) -> Result<spae_core::FrozenInputs> {
        let missing = spae_core::images::not_kept(&self.rows, idx);
        if !missing.is_empty() {
            let x = data.batch(&missing, model.device())?;
            let f = model.frozen_inputs(&x)?;
            for (k, &i) in missing.iter().enumerate() {
                self.rows.insert(i, f.row(k)?);
            }
        }
        let rows: Vec<&spae_core::FrozenInputs> = idx.iter().map(|i| &self.rows[i]).collect();
        Ok(spae_core::FrozenInputs::cat(&rows)?)
    }
}
