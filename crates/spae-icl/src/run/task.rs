//! The images a run classifies, and its episodes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use prompt::{Episode, EpisodeConfig, Pool};
use spae_datasets::{ImageFiles, LabeledImages, Split};

use crate::cli::{RunArgs, TaskName};

/// The bundled sample: 6 Fashion-MNIST test images per class, in the image-folder layout.
pub fn sample_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/samples/fashion-mnist-test-60")
}

/// Pixels of the images episodes name, by image id.
pub enum Images {
    /// Decoded up front; the id of item `i` is `<name>/<i>`.
    Memory(LabeledImages),
    /// Read when asked for; the id is the path as listed.
    Files(ImageFiles),
}

pub struct Task {
    pub images: Images,
    pub episodes: Vec<Episode>,
    /// Image id -> index into `images`.
    index: HashMap<String, usize>,
}

impl Task {
    pub fn open(args: &RunArgs, channels: usize, size: usize) -> Result<Self> {
        let cfg = EpisodeConfig {
            way: args.way,
            shots: args.shots,
            repeats: args.repeats,
            induction: args.induction(),
            seed: args.seed,
            episodes: args.episodes,
        };
        let data = || {
            args.data.clone().with_context(|| {
                format!(
                    "--task {} needs --data: {}",
                    task_name(args.task),
                    data_help(args.task)
                )
            })
        };
        match args.task {
            TaskName::Sample => {
                let dir = sample_dir();
                let set = spae_datasets::image_folder(&dir, channels, size)
                    .with_context(|| format!("the bundled sample {}", dir.display()))?;
                Self::from_memory(set, &cfg)
            }
            TaskName::Folder => {
                let dir = data()?;
                let set = spae_datasets::image_folder(&dir, channels, size).with_context(|| {
                    format!("--data {}: {}", dir.display(), data_help(args.task))
                })?;
                Self::from_memory(set, &cfg)
            }
            TaskName::FashionMnist | TaskName::Mnist => {
                let split: Split = args.split.parse().map_err(anyhow::Error::msg)?;
                let cache = spae_assets::AssetCache::from_env();
                let set = if args.task == TaskName::Mnist {
                    spae_datasets::mnist(&cache, split)?
                } else {
                    spae_datasets::fashion_mnist(&cache, split)?
                };
                check_shape(&set, channels, size)?;
                Self::from_memory(set, &cfg)
            }
            TaskName::MiniImagenet => {
                let dir = data()?;
                let set = spae_datasets::mini_imagenet(&dir, &args.split).with_context(|| {
                    format!("--data {}: {}", dir.display(), data_help(args.task))
                })?;
                let ids: Vec<String> = set.paths.iter().map(|p| p.display().to_string()).collect();
                let pool = Pool::new(&set.labels, &set.class_names)?.with_images(ids.clone())?;
                let episodes = prompt::sample_episodes(&pool, &cfg)?;
                Ok(Self::with_ids(Images::Files(set), episodes, ids))
            }
            TaskName::Frozen => {
                let file = data()?;
                let records = prompt::read_frozen(&file)?;
                let base = file.parent().unwrap_or(Path::new("."));
                let mut episodes = Vec::new();
                for (i, r) in records.iter().take(args.episodes).enumerate() {
                    let mut ep = r.to_episode(args.induction());
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
        }
    }

    fn from_memory(set: LabeledImages, cfg: &EpisodeConfig) -> Result<Self> {
        let ids: Vec<String> = (0..set.len())
            .map(|i| format!("{}/{i}", set.name))
            .collect();
        let pool = Pool::new(&set.labels, &set.class_names)?.with_images(ids.clone())?;
        let episodes = prompt::sample_episodes(&pool, cfg)?;
        Ok(Self::with_ids(Images::Memory(set), episodes, ids))
    }

    fn with_ids(images: Images, episodes: Vec<Episode>, ids: Vec<String>) -> Self {
        let index = ids.into_iter().enumerate().map(|(i, id)| (id, i)).collect();
        Self {
            images,
            episodes,
            index,
        }
    }

    /// Images `ids` as a (B, C, S, S) tensor.
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
            Images::Memory(set) => set.batch(&indices, &Device::Cpu)?,
            Images::Files(files) => files.load(&indices, channels, size, &Device::Cpu)?,
        })
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

pub fn task_name(task: TaskName) -> &'static str {
    match task {
        TaskName::Sample => "sample",
        TaskName::FashionMnist => "fashion-mnist",
        TaskName::Mnist => "mnist",
        TaskName::MiniImagenet => "mini-imagenet",
        TaskName::Folder => "folder",
        TaskName::Frozen => "frozen",
    }
}

fn data_help(task: TaskName) -> &'static str {
    match task {
        TaskName::MiniImagenet => {
            "a mini-ImageNet directory: images/*.jpg and train.csv, val.csv, test.csv with \
             `filename,label` rows (the Ravi & Larochelle split used by few-shot papers; not \
             fetchable here, get it where you got ImageNet); class names of the val and test \
             classes are built in, class_names.csv (`wnid,name`) adds others"
        }
        TaskName::Folder => "a directory with one sub-directory of .png/.jpg images per class",
        TaskName::Frozen => {
            "a Frozen-format file (real_name_mi JSON or JSONL records with image_i, caption_i, \
             question_image, question, answer); image paths are relative to the file"
        }
        _ => "no data needed",
    }
}
