//! Tokenizers: the vocabulary a codebook is cut from, a new model's architecture, the
//! checkpoints built into the library, and token pyramids read back from text or JSON.

use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::{Deserialize, Serialize};
use spae_assets::AssetCache;
use spae_core::{
    Codebook, Dictionary, ModelConfig, PyramidConfig, QuantizerKind, SpaeModel, TokenPyramid,
    VocabFilter,
};

use crate::bail;
use crate::error::{Context, EvalError, Result};

/// Where a vocabulary comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VocabSource {
    /// A catalog model, fetched into the asset cache.
    Catalog(String),
    Gguf(PathBuf),
    HfDir(PathBuf),
}

impl VocabSource {
    pub fn parse(s: &str) -> Result<Self> {
        if let Some(p) = s.strip_prefix("gguf:") {
            return Ok(Self::Gguf(p.into()));
        }
        if let Some(p) = s.strip_prefix("hf:") {
            return Ok(Self::HfDir(p.into()));
        }
        let name = s.strip_prefix("local:").unwrap_or(s);
        spae_assets::find(name)?;
        Ok(Self::Catalog(name.to_string()))
    }
}

/// Which vocabulary a codebook is cut from, and how it is filtered (paper Sec. 3.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VocabConfig {
    /// A catalog model (gemma3-270m, smollm2-135m), gguf:PATH, or hf:DIR.
    pub vocab: String,
    pub max_entries: Option<usize>,
    pub max_token_id: Option<u32>,
    pub min_len: usize,
    pub keep_case_duplicates: bool,
    /// Words kept beyond `max_entries`, each a single whole-word token of the vocabulary.
    pub include_words: Vec<String>,
    /// Keep only words of this word list: a catalog name (`wamerican`) or a file with one
    /// word per line, `,lowercase` after it for its lowercase words only ([`load_dictionary`]).
    #[serde(default)]
    pub dictionary: Option<String>,
}

impl Default for VocabConfig {
    fn default() -> Self {
        Self {
            vocab: "gemma3-270m".into(),
            max_entries: None,
            max_token_id: None,
            min_len: 2,
            keep_case_duplicates: false,
            include_words: Vec::new(),
            dictionary: None,
        }
    }
}

/// The word list `spec` names: a catalog asset (fetched on first use) or a file, and after a
/// comma `lowercase` to keep only the words the list writes in lowercase (proper names out,
/// [`Dictionary::lowercase_from_text`]).
pub fn load_dictionary(spec: &str) -> Result<Dictionary> {
    // A file whose name holds a comma is that file.
    let (list, lowercase) = match spec.rsplit_once(',').filter(|_| !Path::new(spec).is_file()) {
        Some((list, "lowercase")) => (list, true),
        Some((_, other)) => bail!(
            "--dictionary {spec}: unknown option {other:?} after the comma (the one option is \
             `lowercase`)"
        ),
        None => (spec, false),
    };
    let path = if spae_assets::find(list).is_ok() {
        AssetCache::from_env().fetch_named(list)?
    } else {
        PathBuf::from(list)
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("--dictionary {spec}: {}", path.display()))?;
    let dict = if lowercase {
        Dictionary::lowercase_from_text(spec, &text)
    } else {
        Dictionary::from_text(spec, &text)
    };
    if dict.words == 0 {
        bail!(
            "--dictionary {spec}: {} has no line of ASCII letters (expected one word per line)",
            path.display()
        );
    }
    Ok(dict)
}

impl VocabConfig {
    /// The filter, with its word list read if one is named.
    pub fn filter(&self) -> Result<VocabFilter> {
        Ok(VocabFilter {
            min_len: self.min_len,
            max_token_id: self.max_token_id,
            max_entries: self.max_entries,
            dedupe_case_insensitive: !self.keep_case_duplicates,
            include: self.include_words.clone(),
            dictionary: self
                .dictionary
                .as_deref()
                .map(load_dictionary)
                .transpose()?,
            ..VocabFilter::default()
        })
    }

    /// Which of `words` the vocabulary has as whole-word entries passing this config's
    /// per-entry rules (the dictionary aside), and which it has not: the words an
    /// `include_words` list can hold.
    pub fn whole_words(&self, words: &[String]) -> Result<(Vec<String>, Vec<String>)> {
        let all = VocabConfig {
            max_entries: None,
            max_token_id: None,
            include_words: Vec::new(),
            dictionary: None,
            ..self.clone()
        }
        .load(&Device::Cpu)?;
        Ok(words
            .iter()
            .cloned()
            .partition(|w| all.index_of_word(w).is_some()))
    }

    pub fn load(&self, device: &Device) -> Result<Codebook> {
        let filter = self.filter()?;
        let cb = match VocabSource::parse(&self.vocab)? {
            VocabSource::Catalog(name) => {
                let path = AssetCache::from_env().fetch_named(&name)?;
                Codebook::from_gguf(&path, &filter, device)?
            }
            VocabSource::Gguf(p) => Codebook::from_gguf(&p, &filter, device)?,
            VocabSource::HfDir(p) => Codebook::from_hf_dir(&p, &filter, device)?,
        };
        tracing::info!(
            entries = cb.len(),
            dim = cb.dim(),
            dictionary = ?filter.dictionary,
            "codebook from {}",
            self.vocab
        );
        Ok(cb)
    }
}

/// Codebook cap of a new model unless `max_entries` says otherwise (0 = no cap):
/// nearest-neighbour cost grows with it, and the first 4,096 filtered words are the LLM's most
/// frequent ones.
pub const DEFAULT_ENTRIES: usize = 4_096;

/// The architecture of a new tokenizer around an LLM vocabulary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchConfig {
    pub vocab: VocabConfig,
    pub image_size: usize,
    /// 1 (gray) or 3 (RGB).
    pub channels: usize,
    /// Channels per resolution level of the conv architecture.
    pub widths: Vec<usize>,
    /// Pyramid layer sides, coarse first.
    pub layers: Vec<usize>,
    /// Project the codebook on its top principal components (0: keep the LLM's dim).
    pub project_dim: usize,
    /// `patch` or `conv`.
    pub arch: String,
    /// `saq` (the paper's, Sec. 3.2) or `rq`.
    pub quantizer: String,
    pub seed: u64,
    /// The side frozen ImageNet MobileNetV2 reads each image at, its features an input of the
    /// encoder (`ModelConfig::backbone`); 0: none.
    #[serde(default)]
    pub backbone_size: usize,
    /// The teacher whose relevance-weighted codebook rows the encoder's output starts from
    /// (`ModelConfig::prior`); `None`: no prior.
    #[serde(default)]
    pub prior: Option<spae_core::model::PriorConfig>,
}

impl Default for ArchConfig {
    fn default() -> Self {
        Self {
            vocab: VocabConfig::default(),
            image_size: 28,
            channels: 1,
            widths: vec![32, 64, 128],
            layers: vec![1, 2, 4, 8, 8],
            project_dim: 16,
            arch: "patch".into(),
            quantizer: "saq".into(),
            seed: 0,
            backbone_size: 0,
            prior: None,
        }
    }
}

/// A freshly initialised model as `arch` describes it, its tensors on `device` (the codebook
/// is read on the CPU).
pub fn build(arch: &ArchConfig, device: &Device) -> Result<SpaeModel> {
    let mut vocab = arch.vocab.clone();
    vocab.max_entries = match vocab.max_entries {
        None => Some(DEFAULT_ENTRIES),
        Some(0) => None,
        some => some,
    };
    let quantizer = match arch.quantizer.as_str() {
        "saq" => QuantizerKind::Saq,
        "rq" => QuantizerKind::Rq,
        other => bail!("--quantizer {other:?}: expected saq or rq"),
    };
    let mut codebook = vocab.load(&Device::Cpu)?;
    if arch.project_dim > 0 && arch.project_dim < codebook.dim() {
        codebook = codebook.project_pca(arch.project_dim)?;
    }
    let patch = match arch.arch.as_str() {
        "patch" => ModelConfig::mnist(codebook.dim()).patch,
        "conv" => None,
        other => bail!("--arch {other:?}: expected patch or conv"),
    };
    let levels = match &patch {
        // A patch of p pixels covers what log2(p) halvings do.
        Some(p) => p.patch.trailing_zeros() as usize + 1,
        None => arch.widths.len(),
    };
    let grid = ModelConfig::grid_for(arch.image_size, levels, &arch.layers);
    let pyramid = PyramidConfig::new(grid, arch.layers.clone())
        .with_context(|| format!("--layers {:?} on a {grid}x{grid} grid", arch.layers))?;
    let cfg = ModelConfig {
        image_size: arch.image_size,
        in_channels: arch.channels,
        channels: if patch.is_some() {
            vec![]
        } else {
            arch.widths.clone()
        },
        res_blocks: if patch.is_some() { 0 } else { 1 },
        embed_dim: codebook.dim(),
        pyramid,
        quantizer,
        global_context: true,
        patch,
        decoder_input: spae_core::model::DecoderInput::Mean,
        backbone: match arch.backbone_size {
            0 => None,
            side => Some(spae_core::model::BackboneConfig {
                input_size: side,
                feature_dim: spae_core::scorer::mobilenet::Config::imagenet().last_channels,
                weights_sha256: crate::scorer::backbone_sha256()?,
            }),
        },
        prior: arch.prior.clone(),
    };
    let mut model = SpaeModel::new_seeded(cfg, codebook, device, arch.seed)?;
    attach_frozen(&mut model)?;
    Ok(model)
}

/// The prior of the teacher `scorer` (a scorer spec) for a tokenizer of `data`, pinned by
/// the sha256 of what the spec names (`ModelConfig::prior`).
pub fn prior_config(
    scorer: &str,
    data: &str,
    temperature: f64,
) -> Result<spae_core::model::PriorConfig> {
    Ok(spae_core::model::PriorConfig {
        scorer: scorer.to_string(),
        scorer_sha256: crate::scorer::scorer_sha256(scorer)?,
        data: data.to_string(),
        temperature,
    })
}

/// Attach the frozen networks a model's encoder reads: MobileNetV2 (`ModelConfig::backbone`;
/// fetched on first use), its pinned weights checked to be the file the model was trained
/// with, and the teacher of its prior (`ModelConfig::prior`), checked the same way. Models that read neither are left as they are.
pub fn attach_frozen(model: &mut SpaeModel) -> Result<()> {
    if let Some(b) = model.config().backbone.clone() {
        let net = crate::scorer::pinned_backbone(
            &b.weights_sha256,
            b.input_size,
            "the tokenizer",
            model.device(),
        )?;
        model.attach_backbone(std::sync::Arc::new(net))?;
    }
    if let Some(p) = model.config().prior.clone() {
        let found = crate::scorer::scorer_sha256(&p.scorer)
            .with_context(|| format!("the tokenizer's teacher {:?}", p.scorer))?;
        if found != p.scorer_sha256 {
            bail!(
                "the tokenizer was trained with the teacher {:?} of sha256 {}; here it is {} \
                 (a file of the teacher changed?)",
                p.scorer,
                p.scorer_sha256,
                found
            );
        }
        let scorer = crate::scorer::load_scorer(&p.scorer, model.codebook(), &p.data)
            .with_context(|| format!("the tokenizer's teacher {:?}", p.scorer))?;
        model.attach_prior(std::sync::Arc::new(scorer))?;
    }
    Ok(())
}

/// The tokenizers built into the library (`checkpoints/README.md` says how each was made).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BuiltIn {
    /// MNIST + Fashion-MNIST, 28x28 gray, Gemma 3 vocabulary: the default everywhere but VQA.
    MnistFashion,
    /// easy-VQA at 32x32 RGB (its 64x64 images resized): the default of captioning and VQA.
    EasyVqa,
    /// Emoji train concepts at 32x32 RGB, the dictionary-filtered Gemma 3 vocabulary (30,738
    /// entries): the default of the `emoji` task.
    Emoji,
}

const MNIST_FASHION: &[u8] =
    include_bytes!("../../../checkpoints/spae-gemma3-mnist-fashion.safetensors");
const EASY_VQA: &[u8] = include_bytes!("../../../checkpoints/spae-gemma3-easy-vqa.safetensors");
const EMOJI: &[u8] = include_bytes!("../../../checkpoints/spae-gemma3-emoji.safetensors");

impl BuiltIn {
    pub fn bytes(self) -> &'static [u8] {
        match self {
            BuiltIn::MnistFashion => MNIST_FASHION,
            BuiltIn::EasyVqa => EASY_VQA,
            BuiltIn::Emoji => EMOJI,
        }
    }

    /// How the checkpoint is named in messages and result files.
    pub fn label(self) -> &'static str {
        match self {
            BuiltIn::MnistFashion => "<built-in spae-gemma3-mnist-fashion>",
            BuiltIn::EasyVqa => "<built-in spae-gemma3-easy-vqa>",
            BuiltIn::Emoji => "<built-in spae-gemma3-emoji>",
        }
    }
}

/// A tokenizer checkpoint: a file, or (when `path` is `None`) the built-in `builtin`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRef {
    pub path: Option<PathBuf>,
    pub builtin: BuiltIn,
}

impl CheckpointRef {
    pub fn new(path: Option<PathBuf>, builtin: BuiltIn) -> Self {
        Self { path, builtin }
    }

    /// The built-in MNIST + Fashion-MNIST tokenizer unless `path` names another.
    pub fn or_default(path: Option<PathBuf>) -> Self {
        Self::new(path, BuiltIn::MnistFashion)
    }

    /// The model, and the name it goes by in messages.
    pub fn load(&self, device: &Device) -> Result<(SpaeModel, String)> {
        let (mut model, label) = match &self.path {
            Some(p) => (SpaeModel::load(p, device)?, p.display().to_string()),
            None => (
                SpaeModel::load_bytes(
                    self.builtin.bytes(),
                    Path::new(self.builtin.label()),
                    device,
                )?,
                self.builtin.label().to_string(),
            ),
        };
        attach_frozen(&mut model).with_context(|| label.clone())?;
        tracing::debug!(?model, "loaded {label}");
        Ok((model, label))
    }

    /// sha256 of the checkpoint's bytes, so a result file says exactly which tokenizer made it.
    pub fn sha256(&self) -> Result<String> {
        match &self.path {
            Some(p) => crate::util::sha256_file(p),
            None => Ok(crate::util::sha256_hex(self.builtin.bytes())),
        }
    }
}

/// Token pyramids from `tokenize`'s JSON (one object or a list), or from words: one image per
/// block of lines (blocks separated by blank lines; `#` lines are comments), words in layer
/// order.
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
        return Err(EvalError::msg("no words to decode"));
    }
    Ok(out)
}

/// `layers`, or the model's whole pyramid, checked against the model.
pub fn depth_or_all(model: &SpaeModel, layers: Option<usize>) -> Result<usize> {
    let depth = layers.unwrap_or(model.config().pyramid.depth());
    model
        .config()
        .pyramid
        .check_depth(depth)
        .context("--layers")?;
    Ok(depth)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The built-in tokenizers that read MobileNetV2 load with it attached and tokenize; a model
    /// that names other weights is refused, naming both.
    #[test]
    fn backbones_are_attached_by_their_pinned_weights() {
        for builtin in [BuiltIn::Emoji, BuiltIn::EasyVqa] {
            let (model, _) = CheckpointRef::new(None, builtin)
                .load(&Device::Cpu)
                .unwrap();
            let cfg = model.config().clone();
            assert!(cfg.backbone.is_some(), "{builtin:?}");
            let x = candle_core::Tensor::rand(0f32, 1f32, (2, 3, 32, 32), &Device::Cpu).unwrap();
            assert_eq!(model.tokenize(&x, 2).unwrap().len(), 2);

            let mut other = cfg.clone();
            if let Some(b) = other.backbone.as_mut() {
                b.weights_sha256 = "0".repeat(64);
            }
            let mut m = SpaeModel::new(other, model.codebook().clone(), &Device::Cpu).unwrap();
            let err = attach_frozen(&mut m).unwrap_err().to_string();
            assert!(err.contains(&"0".repeat(64)), "{err}");
            assert!(
                err.contains(&crate::scorer::backbone_sha256().unwrap()),
                "{err}"
            );
        }
    }

    /// A model with a teacher prior loads the teacher its config pins: refused (naming both
    /// sha256) when the file differs, attached when it is the file, and then it tokenizes.
    #[test]
    fn a_prior_teacher_is_attached_by_its_pinned_files() {
        let teacher = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../checkpoints/scorer-devise-emoji.safetensors"
        );
        let (emoji, _) = CheckpointRef::new(None, BuiltIn::Emoji)
            .load(&Device::Cpu)
            .unwrap();
        // The teacher embeds every codebook word: 40 of the emoji codebook's keep it quick.
        let full = emoji.codebook();
        let codebook = spae_core::Codebook::new(
            full.info().clone(),
            full.token_ids()[..40].to_vec(),
            full.pieces()[..40].to_vec(),
            full.embeddings().narrow(0, 0, 40).unwrap(),
        )
        .unwrap();
        let mut cfg = emoji.config().clone();
        cfg.prior = Some(prior_config(teacher, "emoji", 0.01).unwrap());
        let pinned = cfg.prior.as_ref().unwrap().scorer_sha256.clone();
        assert_eq!(
            pinned,
            crate::util::sha256_file(Path::new(teacher)).unwrap()
        );

        let mut wrong = cfg.clone();
        if let Some(p) = wrong.prior.as_mut() {
            p.scorer_sha256 = "0".repeat(64);
        }
        let mut m = SpaeModel::new(wrong, codebook.clone(), &Device::Cpu).unwrap();
        let err = format!("{:#}", attach_frozen(&mut m).unwrap_err());
        assert!(
            err.contains(&"0".repeat(64)) && err.contains(&pinned),
            "{err}"
        );

        let mut m = SpaeModel::new(cfg, codebook, &Device::Cpu).unwrap();
        let x = candle_core::Tensor::rand(0f32, 1f32, (2, 3, 32, 32), &Device::Cpu).unwrap();
        assert!(m.tokenize(&x, 2).is_err());
        attach_frozen(&mut m).unwrap();
        let prior = m.prior_embeddings(&x).unwrap().unwrap();
        assert_eq!(prior.dims(), [2, m.config().embed_dim]);
        assert_eq!(m.tokenize(&x, 2).unwrap().len(), 2);
    }

    #[test]
    fn parses_vocab_names() {
        assert_eq!(
            VocabSource::parse("gemma3-270m").unwrap(),
            VocabSource::Catalog("gemma3-270m".into())
        );
        assert_eq!(
            VocabSource::parse("local:smollm2-135m").unwrap(),
            VocabSource::Catalog("smollm2-135m".into())
        );
        assert_eq!(
            VocabSource::parse("gguf:/m.gguf").unwrap(),
            VocabSource::Gguf("/m.gguf".into())
        );
        assert_eq!(
            VocabSource::parse("hf:/d").unwrap(),
            VocabSource::HfDir("/d".into())
        );
        assert!(VocabSource::parse("llama-9000").is_err());
    }

    /// The dictionary drops fragments and keeps words; class words join a capped codebook
    /// where Gemma 3 has them as whole words, and the rest are reported, not invented.
    #[test]
    fn dictionary_and_class_words_on_gemma3() {
        let plain = VocabConfig {
            max_entries: Some(4_096),
            ..VocabConfig::default()
        };
        let cb = plain.load(&Device::Cpu).unwrap();
        // Fragments among the 4,096 most frequent filtered words (seen in real codes).
        for w in ["dri", "giv", "swe", "trad"] {
            assert!(
                cb.index_of_word(w).is_some(),
                "{w} is not a fragment of the plain codebook"
            );
        }
        let dict = VocabConfig {
            dictionary: Some("wamerican".into()),
            ..plain.clone()
        };
        let cb = dict.load(&Device::Cpu).unwrap();
        assert_eq!(cb.len(), 4_096);
        for w in ["dri", "giv", "swe", "trad"] {
            assert!(cb.index_of_word(w).is_none(), "{w} survived the dictionary");
        }
        for w in ["the", "house", "water"] {
            assert!(cb.index_of_word(w).is_some(), "{w} lost to the dictionary");
        }
        assert_eq!(
            cb.info()
                .filter
                .dictionary
                .as_ref()
                .map(|d| d.name.as_str()),
            Some("wamerican")
        );

        let mut arch = ArchConfig {
            vocab: dict,
            ..ArchConfig::default()
        };
        let names = [
            "police car".to_string(),
            "hedgehog".into(),
            "sauropod".into(),
        ];
        crate::train::include_class_words(&mut arch, &names).unwrap();
        assert_eq!(arch.vocab.include_words, ["police", "car", "hedgehog"]);
        let cb = arch.vocab.load(&Device::Cpu).unwrap();
        assert!(cb.index_of_word("hedgehog").is_some());
        let err = VocabConfig {
            dictionary: Some("/no/such/list".into()),
            ..VocabConfig::default()
        }
        .filter()
        .unwrap_err();
        assert!(err.to_string().contains("/no/such/list"), "{err}");
    }

    /// `wamerican,lowercase` keeps the list's lowercase words: common nouns, not the proper
    /// names it also holds; an unknown option is an error naming it.
    #[test]
    fn lowercase_dictionary_drops_proper_names() {
        let all = load_dictionary("wamerican").unwrap();
        let lower = load_dictionary("wamerican,lowercase").unwrap();
        assert_eq!(lower.name, "wamerican,lowercase");
        assert!(lower.words < all.words);
        for w in ["hilton", "tulane", "juan"] {
            assert!(all.contains(w) && !lower.contains(w), "{w}");
        }
        for w in ["house", "turkey", "dolphin"] {
            assert!(lower.contains(w), "{w}");
        }
        let err = load_dictionary("wamerican,upper").unwrap_err().to_string();
        assert!(
            err.contains("wamerican,upper") && err.contains("\"upper\""),
            "{err}"
        );
    }
}
