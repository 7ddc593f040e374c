//! Tasks as data: a task is a TOML file (data + split + class names + prompt template +
//! scorings + defaults), like lm-evaluation-harness's task configs. The built-in ones are the
//! files of the repository's `tasks/` folder, built into the library; `--task path/to/my.toml`
//! runs a user's own without writing Rust.
//!
//! ```toml
//! name = "my-flowers"
//! description = "My flower photos"
//! data = "folder:flowers"        # relative paths start at the task file's folder
//! split = "test"
//! template = "few_shot_classification"
//! scorings = ["open", "constrained"]
//!
//! [defaults]
//! way = 2
//! shots = 1
//! layers = 2
//! episodes = 100
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use prompt::{Episode, EpisodeConfig, Pool};
use serde::{Deserialize, Serialize};
use spae_datasets::{ImageFiles, LabeledImages, Split};

use crate::bail;
use crate::error::{Context, EvalError, Result};
use crate::fewshot::Scoring;

/// The task files built in: (file name, TOML).
const BUILTIN: &[(&str, &str)] = &[
    ("sample", include_str!("../../../tasks/sample.toml")),
    (
        "fashion-mnist",
        include_str!("../../../tasks/fashion-mnist.toml"),
    ),
    ("mnist", include_str!("../../../tasks/mnist.toml")),
    (
        "mini-imagenet",
        include_str!("../../../tasks/mini-imagenet.toml"),
    ),
    ("folder", include_str!("../../../tasks/folder.toml")),
    ("frozen", include_str!("../../../tasks/frozen.toml")),
    ("emoji", include_str!("../../../tasks/emoji.toml")),
    (
        "emoji-caption",
        include_str!("../../../tasks/emoji-caption.toml"),
    ),
    (
        "easy-vqa-caption",
        include_str!("../../../tasks/easy-vqa-caption.toml"),
    ),
    (
        "easy-vqa-vqa",
        include_str!("../../../tasks/easy-vqa-vqa.toml"),
    ),
];

/// What a task asks of the LLM.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskKind {
    /// Few-shot classification in Frozen's episodes (`spae-icl run`, `table1`).
    #[default]
    Classification,
    /// Captions in context (`eval-vqa --task caption`: easy-VQA; `--task emoji-caption`: the
    /// names of unseen emoji concepts).
    Caption,
    /// One-word answers to questions about easy-VQA images (`eval-vqa --task vqa`).
    Vqa,
}

/// The settings a task runs with unless a flag says otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TaskDefaults {
    /// Classes per episode.
    pub way: usize,
    /// Distinct support images per class (Frozen's inner shots).
    pub shots: usize,
    /// Extra copies of the whole support set.
    pub repeats: usize,
    /// Open the prompt with "Answer with a or b." (Frozen's task induction).
    pub induction: bool,
    /// Pyramid layers per image (2: 5 words, 3: 21 words on the 1,2,4,.. pyramid).
    pub layers: usize,
    pub episodes: usize,
    /// Most tokens of an open-ended answer.
    pub max_tokens: usize,
}

impl Default for TaskDefaults {
    fn default() -> Self {
        Self {
            way: 2,
            shots: 1,
            repeats: 0,
            induction: true,
            layers: 2,
            episodes: 100,
            max_tokens: 8,
        }
    }
}

fn default_split() -> String {
    "test".into()
}

fn default_template() -> String {
    "few_shot_classification".into()
}

fn default_scorings() -> Vec<Scoring> {
    vec![Scoring::Open, Scoring::Constrained]
}

/// One task file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub kind: TaskKind,
    /// A data spec: `mnist`, `fashion-mnist`, `easy-vqa`, `sample` (bundled), `folder:DIR`,
    /// `mini-imagenet:DIR` or `frozen:FILE`; `{data}` stands for the `--data` flag.
    pub data: String,
    /// What `{data}` must be, for the error when `--data` is missing.
    #[serde(default)]
    pub data_help: Option<String>,
    #[serde(default = "default_split")]
    pub split: String,
    /// Class names in label order, replacing the data's own (folder names, say).
    #[serde(default)]
    pub class_names: Option<Vec<String>>,
    /// A template of `prompts/` (or of `--prompts DIR`).
    #[serde(default = "default_template")]
    pub template: String,
    /// How answers are read; the first is each result line's `prediction`.
    #[serde(default = "default_scorings")]
    pub scorings: Vec<Scoring>,
    #[serde(default)]
    pub defaults: TaskDefaults,
    /// Draw every support image from drawing styles other than the query's (data in styles:
    /// `emoji`), so that matching pixels of one style does not help.
    #[serde(default)]
    pub support_from_other_styles: bool,
    /// VQA tasks: which training questions a prompt's support items are drawn from (`form`
    /// when absent).
    #[serde(default)]
    pub support_questions: crate::vqa::SupportDraw,
    /// The built-in tokenizer the task reads images with unless `--checkpoint` names one
    /// (`mnist-fashion` when absent).
    #[serde(default)]
    pub tokenizer: Option<crate::tokenizer::BuiltIn>,
    /// Where the file was read from (`None`: built in); relative paths in `data` start there.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

impl TaskSpec {
    /// Parses a task file's text; `name_of` says where it came from in errors.
    pub fn parse(text: &str, name_of: &str) -> Result<Self> {
        let spec: TaskSpec = toml::from_str(text).with_context(|| format!("task {name_of}"))?;
        if spec.scorings.is_empty() {
            bail!("task {name_of}: `scorings` is empty; name at least one (open, constrained, calibrated, constrained-decoding)");
        }
        if spec.defaults.way < 2 {
            bail!(
                "task {name_of}: defaults.way {} is below 2",
                spec.defaults.way
            );
        }
        Ok(spec)
    }

    /// A task by built-in name, or a `.toml` file by path.
    pub fn resolve(name: &str) -> Result<Self> {
        let path = Path::new(name);
        if name.ends_with(".toml") || path.is_file() {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--task {name}: reading the task file"))?;
            let mut spec = Self::parse(&text, name)?;
            spec.source = Some(path.to_path_buf());
            return Ok(spec);
        }
        match BUILTIN.iter().find(|(n, _)| *n == name) {
            Some((n, text)) => Self::parse(text, n),
            None => Err(EvalError::msg(format!(
                "--task {name}: no such task; built in: {} (or give a path to a .toml task file)",
                BUILTIN.iter().map(|t| t.0).collect::<Vec<_>>().join(", ")
            ))),
        }
    }

    /// Every built-in task.
    pub fn builtin() -> Result<Vec<Self>> {
        BUILTIN.iter().map(|(n, t)| Self::parse(t, n)).collect()
    }

    /// `data` with `{data}` filled from the `--data` flag, and a path relative to the task
    /// file resolved against the file's folder.
    pub fn data_spec(&self, data: Option<&Path>) -> Result<String> {
        if self.data.contains("{data}") {
            let Some(d) = data else {
                bail!(
                    "--task {} needs --data: {}",
                    self.name,
                    self.data_help
                        .as_deref()
                        .unwrap_or("the data the task reads")
                );
            };
            return Ok(self.data.replace("{data}", &d.display().to_string()));
        }
        let base = self.source.as_deref().and_then(Path::parent);
        let Some(base) = base.filter(|b| !b.as_os_str().is_empty()) else {
            return Ok(self.data.clone());
        };
        Ok(self
            .data
            .split('+')
            .map(|part| match part.split_once(':') {
                Some((kind, p)) if Path::new(p).is_relative() => {
                    format!("{kind}:{}", base.join(p).display())
                }
                _ => part.to_string(),
            })
            .collect::<Vec<_>>()
            .join("+"))
    }
}

/// Pixels of the images episodes name, by image id.
pub enum Images {
    /// Decoded up front; the id of item `i` is `<name>/<i>`.
    Memory(LabeledImages),
    /// Read when asked for; the id is the path as listed.
    Files(ImageFiles),
}

/// A classification task's images and episodes.
pub struct Task {
    pub images: Images,
    pub episodes: Vec<Episode>,
    /// Image id -> index into `images`.
    index: HashMap<String, usize>,
}

impl Task {
    /// The episodes of `spec` on its data (`data`: the `--data` flag), at the checkpoint's
    /// `channels` and `size`.
    pub fn open(
        spec: &TaskSpec,
        data: Option<&Path>,
        split: &str,
        cfg: &EpisodeConfig,
        channels: usize,
        size: usize,
    ) -> Result<Self> {
        let data_spec = spec.data_spec(data)?;
        if let Some(dir) = data_spec.strip_prefix("mini-imagenet:") {
            let set = spae_datasets::mini_imagenet(Path::new(dir), split)
                .with_context(|| format!("task {}: data {dir}", spec.name))?;
            let ids: Vec<String> = set.paths.iter().map(|p| p.display().to_string()).collect();
            let names = class_names(spec, &set.class_names)?;
            let pool = Pool::new(&set.labels, &names)?.with_images(ids.clone())?;
            let episodes = prompt::sample_episodes(&pool, cfg)?;
            return Ok(Self::with_ids(Images::Files(set), episodes, ids));
        }
        if let Some(file) = data_spec.strip_prefix("frozen:") {
            return Self::frozen(Path::new(file), cfg);
        }
        if data_spec == "emoji" {
            return Self::emoji(spec, split, cfg, channels, size);
        }
        if spec.support_from_other_styles {
            bail!(
                "task {}: support_from_other_styles needs data drawn in styles (emoji), not {data_spec}",
                spec.name
            );
        }
        let split: Split = split
            .parse()
            .map_err(|e: String| EvalError::msg(format!("--split: {e}")))?;
        let set = spae_datasets::load_spec(&data_spec, split, channels, size)
            .with_context(|| format!("task {}", spec.name))?;
        check_shape(&set, channels, size)?;
        let names = class_names(spec, &set.class_names)?;
        let ids: Vec<String> = (0..set.len())
            .map(|i| format!("{}/{i}", set.name))
            .collect();
        let pool = Pool::new(&set.labels, &names)?.with_images(ids.clone())?;
        let episodes = prompt::sample_episodes(&pool, cfg)?;
        Ok(Self::with_ids(Images::Memory(set), episodes, ids))
    }

    /// The emoji concepts of `split` (train, val, test: disjoint concepts), every concept in
    /// its four drawing styles; with `support_from_other_styles`, the styles are the pool's
    /// groups.
    fn emoji(
        spec: &TaskSpec,
        split: &str,
        cfg: &EpisodeConfig,
        channels: usize,
        size: usize,
    ) -> Result<Self> {
        let part: spae_datasets::EmojiSplit = split
            .parse()
            .map_err(|e: String| EvalError::msg(format!("--split: {e}")))?;
        let cache = spae_assets::AssetCache::from_env();
        let set = spae_datasets::emoji(&cache, part, &spae_datasets::all_styles(), size)
            .with_context(|| format!("task {}", spec.name))?;
        let images = set.images.with_channels(channels);
        let names = class_names(spec, &images.class_names)?;
        let ids: Vec<String> = (0..images.len())
            .map(|i| format!("emoji-{split}/{i}"))
            .collect();
        let mut pool = Pool::new(&images.labels, &names)?.with_images(ids.clone())?;
        if spec.support_from_other_styles {
            // A style's group is its discriminant: four distinct numbers.
            pool = pool.with_groups(set.styles.iter().map(|&s| s as u32).collect())?;
        }
        let episodes = prompt::sample_episodes(&pool, cfg)?;
        Ok(Self::with_ids(Images::Memory(images), episodes, ids))
    }

    /// Episodes of a Frozen-format file (real_name_mi); image paths are relative to it.
    fn frozen(file: &Path, cfg: &EpisodeConfig) -> Result<Self> {
        let records = prompt::read_frozen(file)?;
        let base = file.parent().unwrap_or(Path::new("."));
        let mut episodes = Vec::new();
        for (i, r) in records.iter().take(cfg.episodes).enumerate() {
            let mut ep = r.to_episode(cfg.induction);
            for shot in ep.support.iter_mut().chain([&mut ep.query]) {
                shot.image = base.join(&shot.image).display().to_string();
            }
            ep.validate(i).with_context(|| file.display().to_string())?;
            episodes.push(ep);
        }
        let mut ids: Vec<String> = Vec::new();
        for ep in &episodes {
            for shot in ep.support.iter().chain([&ep.query]) {
                if !ids.contains(&shot.image) {
                    ids.push(shot.image.clone());
                }
            }
        }
        let files = ImageFiles {
            name: file.display().to_string(),
            paths: ids.iter().map(PathBuf::from).collect(),
            labels: vec![0; ids.len()],
            class_names: Vec::new(),
        };
        Ok(Self::with_ids(Images::Files(files), episodes, ids))
    }

    fn with_ids(images: Images, episodes: Vec<Episode>, ids: Vec<String>) -> Self {
        let index = ids.into_iter().enumerate().map(|(i, id)| (id, i)).collect();
        Self {
            images,
            episodes,
            index,
        }
    }

    /// Images `ids` as a (B, C, S, S) tensor: `channels` x `size` x `size`. Data held in
    /// memory was read at the size the task was opened with; asking it for another is an
    /// error, not a silent batch of the wrong size (open the task again at that size).
    pub fn load(&self, ids: &[&str], channels: usize, size: usize) -> Result<Tensor> {
        let indices = ids
            .iter()
            .map(|id| {
                self.index
                    .get(*id)
                    .copied()
                    .with_context(|| format!("image {id} is not in the task's data"))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(match &self.images {
            Images::Memory(set) => {
                let t = set.batch(&indices, &Device::Cpu)?;
                let (_, c, h, w) = t.dims4()?;
                if (c, h, w) != (channels, size, size) {
                    bail!(
                        "the task's images are held at {c}x{h}x{w}; asked for \
                         {channels}x{size}x{size}: open the task at that size"
                    );
                }
                t
            }
            Images::Files(files) => files.load(&indices, channels, size, &Device::Cpu)?,
        })
    }
}

/// The task's class names where it gives them (as many as the data has), else the data's.
fn class_names(spec: &TaskSpec, data: &[String]) -> Result<Vec<String>> {
    match &spec.class_names {
        None => Ok(data.to_vec()),
        Some(names) if names.len() == data.len() => Ok(names.clone()),
        Some(names) => bail!(
            "task {}: class_names lists {} names, the data has {} classes ({})",
            spec.name,
            names.len(),
            data.len(),
            data.join(", ")
        ),
    }
}

fn check_shape(set: &LabeledImages, channels: usize, size: usize) -> Result<()> {
    if set.channels != channels || set.size != size {
        bail!(
            "{} images are {}x{}x{}, the checkpoint reads {}x{}x{}: use a checkpoint trained on this size",
            set.name,
            set.channels,
            set.size,
            set.size,
            channels,
            size,
            size
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_task_parses() {
        let tasks = TaskSpec::builtin().unwrap();
        assert_eq!(tasks.len(), BUILTIN.len());
        for (t, (file, _)) in tasks.iter().zip(BUILTIN) {
            assert_eq!(t.name, *file, "a task's name is its file name");
        }
    }

    #[test]
    fn an_unknown_key_or_task_is_an_error_that_names_it() {
        let err =
            TaskSpec::parse("name = \"x\"\ndata = \"mnist\"\nwya = 3\n", "x.toml").unwrap_err();
        let text = format!("{err}: {}", err.root());
        assert!(text.contains("x.toml") && text.contains("wya"), "{text}");
        let err = TaskSpec::resolve("cifar-1000").unwrap_err().to_string();
        assert!(
            err.contains("cifar-1000") && err.contains("fashion-mnist"),
            "{err}"
        );
    }

    /// The emoji task's episodes: unseen test concepts (read here at 28x28 gray), and no
    /// support image in the query's drawing style.
    #[test]
    fn emoji_episodes_keep_the_query_style_out_of_the_support_set() {
        let spec = TaskSpec::resolve("emoji").unwrap();
        assert!(spec.support_from_other_styles);
        assert_eq!(spec.tokenizer, Some(crate::tokenizer::BuiltIn::Emoji));
        let cfg = EpisodeConfig {
            way: 5,
            shots: 2,
            repeats: 0,
            induction: true,
            seed: 0,
            episodes: 30,
        };
        let task = Task::open(&spec, None, "test", &cfg, 1, 28).unwrap();
        let cache = spae_assets::AssetCache::from_env();
        let set = spae_datasets::emoji(
            &cache,
            spae_datasets::EmojiSplit::Test,
            &spae_datasets::all_styles(),
            28,
        )
        .unwrap();
        let style = |id: &str| {
            let i: usize = id.rsplit('/').next().unwrap().parse().unwrap();
            set.styles[i]
        };
        let train: Vec<_> = spae_datasets::emoji_split_concepts(spae_datasets::EmojiSplit::Train)
            .unwrap()
            .into_iter()
            .map(|c| c.name)
            .collect();
        for ep in &task.episodes {
            let q = style(&ep.query.image);
            assert!(ep.support.iter().all(|s| style(&s.image) != q), "{ep:?}");
            assert!(ep.classes.iter().all(|c| !train.contains(c)), "{ep:?}");
        }
        let x = task
            .load(&[task.episodes[0].query.image.as_str()], 1, 28)
            .unwrap();
        assert_eq!(x.dims(), &[1, 1, 28, 28]);
        // Held at 28x28 gray: another size or channel count is refused, not returned as is.
        for (c, side) in [(1, 64), (3, 28)] {
            let err = task
                .load(&[task.episodes[0].query.image.as_str()], c, side)
                .unwrap_err()
                .to_string();
            assert!(err.contains("held at 1x28x28"), "{err}");
        }
    }

    #[test]
    fn data_paths_start_at_the_task_file_and_data_fills_the_placeholder() {
        let mut spec =
            TaskSpec::parse("name = \"x\"\ndata = \"folder:imgs+mnist\"\n", "x").unwrap();
        spec.source = Some(PathBuf::from("/home/me/tasks/x.toml"));
        assert_eq!(
            spec.data_spec(None).unwrap(),
            "folder:/home/me/tasks/imgs+mnist"
        );
        let folder = TaskSpec::resolve("folder").unwrap();
        assert!(folder
            .data_spec(None)
            .unwrap_err()
            .to_string()
            .contains("needs --data"));
        assert_eq!(folder.data_spec(Some(Path::new("d"))).unwrap(), "folder:d");
    }
}
