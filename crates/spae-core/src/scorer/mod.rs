//! Semantic relevance of codebook entries to images (semantic guidance with CLIP relevance,
//! SPAE paper Sec. 3.1).
//!
//! A [`SemanticScorer`] gives every image a relevance to every codebook entry. Both scorers
//! here are CLIP-shaped: an image embedding and a text embedding in one space, relevance =
//! cosine(image, text of the entry's word):
//! - [`clip::ClipModel`]: real CLIP weights a user has (HF layout), via candle-transformers;
//! - [`tower::ImageTower`] + [`text::SentenceEncoder`]: a small CNN trained here against a
//!   frozen all-MiniLM-L6-v2 on captions made from labels (no CLIP weights can be had offline).

pub mod clip;
pub mod conse;
pub mod devise;
pub mod efficientnet;
pub mod mobilenet;
pub mod text;
pub mod tower;
pub mod training;

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::{io_err, Codebook, Result};

/// Relevance of every codebook entry to each image.
pub trait SemanticScorer: Send + Sync {
    /// Images (B, C, S, S) in [0, 1] -> relevance (B, V), higher = more relevant.
    fn relevance(&self, images: &Tensor) -> Result<Tensor>;
    /// Number of entries V scored.
    fn entries(&self) -> usize;
}

/// A model with an image and a text side in one embedding space.
pub trait ImageTextModel: Send + Sync {
    /// Unit-norm image embeddings (B, D).
    fn embed_images(&self, images: &Tensor) -> Result<Tensor>;
    /// Unit-norm text embeddings (N, D).
    fn embed_texts(&self, texts: &[&str]) -> Result<Tensor>;
    /// Names the text side, so cached word embeddings are keyed by it.
    fn text_model_id(&self) -> String;
    /// How the model is asked zero-shot: the caption style of the query ("a photo of a {}")
    /// and the scale of the softmax over the classes' cosines.
    fn zero_shot(&self) -> ZeroShotQuery;
}

/// A zero-shot query: captions of this style, softmax of cosines times `logit_scale`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ZeroShotQuery {
    pub captions: tower::Captions,
    pub logit_scale: f64,
}

/// A scorer chosen at run time (the trained tower, ConSE, a user's CLIP).
impl ImageTextModel for Box<dyn ImageTextModel> {
    fn embed_images(&self, images: &Tensor) -> Result<Tensor> {
        (**self).embed_images(images)
    }
    fn embed_texts(&self, texts: &[&str]) -> Result<Tensor> {
        (**self).embed_texts(texts)
    }
    fn text_model_id(&self) -> String {
        (**self).text_model_id()
    }
    fn zero_shot(&self) -> ZeroShotQuery {
        (**self).zero_shot()
    }
}

/// An [`ImageTextModel`] with the words of one codebook embedded once:
/// relevance(x, k) = cosine(image(x), text(word k)).
pub struct CodebookScorer<M> {
    model: M,
    /// (V, D) unit rows.
    words: Tensor,
}

impl<M: ImageTextModel> CodebookScorer<M> {
    /// Embed the codebook's words (plain, without the word-start marker). With `cache`, the
    /// embeddings are read from / written to that safetensors file, keyed by a hash of the
    /// words and the text model, so the words are embedded once per codebook.
    pub fn new(model: M, codebook: &Codebook, cache: Option<&Path>) -> Result<Self> {
        let words: Vec<&str> = (0..codebook.len()).map(|i| codebook.word(i)).collect();
        let key = word_key(&model.text_model_id(), &words);
        if let Some(path) = cache.filter(|p| p.is_file()) {
            if let Some(t) = read_cached(path, &key, words.len())? {
                return Ok(Self { model, words: t });
            }
        }
        let t = model.embed_texts(&words)?;
        if let Some(path) = cache {
            write_cached(path, &key, &t)?;
        }
        Ok(Self { model, words: t })
    }

    pub fn model(&self) -> &M {
        &self.model
    }

    /// (V, D) unit embeddings of the codebook's words.
    pub fn word_embeddings(&self) -> &Tensor {
        &self.words
    }
}

impl<M: ImageTextModel> SemanticScorer for CodebookScorer<M> {
    fn relevance(&self, images: &Tensor) -> Result<Tensor> {
        let img = self.model.embed_images(images)?;
        Ok(img.matmul(&self.words.t()?)?)
    }
    fn entries(&self) -> usize {
        self.words.dims()[0]
    }
}

/// A stable (FNV-1a, 64-bit) hash of the text model and the words, in hex.
fn word_key(model: &str, words: &[&str]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in model.bytes().chain([0u8]).chain(words.join("\0").bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn read_cached(path: &Path, key: &str, v: usize) -> Result<Option<Tensor>> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let Ok((_, header)) = safetensors::SafeTensors::read_metadata(&bytes) else {
        return Ok(None);
    };
    if header
        .metadata()
        .as_ref()
        .and_then(|m| m.get("spae.words_key"))
        != Some(&key.to_string())
    {
        return Ok(None);
    }
    let map = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)?;
    Ok(map
        .get("words")
        .filter(|t| t.dims().first() == Some(&v))
        .map(|t| t.to_dtype(DType::F32))
        .transpose()?)
}

fn write_cached(path: &Path, key: &str, t: &Tensor) -> Result<()> {
    let meta = std::collections::HashMap::from([("spae.words_key".to_string(), key.to_string())]);
    let tensors =
        std::collections::BTreeMap::from([("words".to_string(), t.to_device(&Device::Cpu)?)]);
    crate::checkpoint::write_atomic(path, &tensors, meta)
}

/// The `k` most relevant entries per row of a relevance matrix (B, V): (indices (B, k) u32,
/// relevances (B, k)), most relevant first.
pub fn top_relevant(relevance: &Tensor, k: usize) -> Result<(Tensor, Tensor)> {
    let k = k.min(relevance.dims()[1]);
    let order = relevance
        .arg_sort_last_dim(false)?
        .narrow(1, 0, k)?
        .contiguous()?;
    let vals = relevance.gather(&order, 1)?;
    Ok((order, vals))
}

/// A scorer that sees images at its own side: `images` are resized to `side` (an average
/// over each block when `side` divides their side, bilinear otherwise) before `inner` embeds
/// them. A tower trained at 32x32 can then score images another teacher reads at 64x64.
pub struct Resized<M> {
    pub inner: M,
    pub side: usize,
}

/// `images` (B, C, S, S) at `side` x `side`.
pub fn resize_images(images: &Tensor, side: usize) -> Result<Tensor> {
    let (_, _, h, w) = images.dims4()?;
    if h == side && w == side {
        return Ok(images.clone());
    }
    if side > 0 && h % side == 0 && w % side == 0 && h / side == w / side {
        return Ok(images.avg_pool2d(h / side)?);
    }
    Ok(images.upsample_bilinear2d(side, side, false)?)
}

impl<M: ImageTextModel> ImageTextModel for Resized<M> {
    fn embed_images(&self, images: &Tensor) -> Result<Tensor> {
        self.inner.embed_images(&resize_images(images, self.side)?)
    }
    fn embed_texts(&self, texts: &[&str]) -> Result<Tensor> {
        self.inner.embed_texts(texts)
    }
    fn text_model_id(&self) -> String {
        self.inner.text_model_id()
    }
    fn zero_shot(&self) -> ZeroShotQuery {
        self.inner.zero_shot()
    }
}

/// Several teachers in one text space **(ours)**: the image embedding is the normalised sum
/// of the members' unit embeddings (each cosine is then the mean of the members' cosines, up
/// to the norm), texts are embedded by the first member. The zero-shot query is the first
/// member's.
pub struct Ensemble {
    members: Vec<Box<dyn ImageTextModel>>,
}

impl Ensemble {
    /// Members must share a text model (the word embeddings are one table).
    pub fn new(members: Vec<Box<dyn ImageTextModel>>) -> Result<Self> {
        let Some(first) = members.first() else {
            return Err(crate::SpaeError::Config(
                "an ensemble needs a member".into(),
            ));
        };
        let id = first.text_model_id();
        if let Some(other) = members.iter().find(|m| m.text_model_id() != id) {
            return Err(crate::SpaeError::Config(format!(
                "ensemble members embed text with different models ({id}, {})",
                other.text_model_id()
            )));
        }
        Ok(Self { members })
    }
}

impl ImageTextModel for Ensemble {
    fn embed_images(&self, images: &Tensor) -> Result<Tensor> {
        let mut sum: Option<Tensor> = None;
        for m in &self.members {
            let e = m.embed_images(images)?;
            sum = Some(match sum {
                None => e,
                Some(s) => (s + e)?,
            });
        }
        match sum {
            Some(s) => text::l2_normalize(&s),
            None => Err(crate::SpaeError::Config(
                "an ensemble needs a member".into(),
            )),
        }
    }
    fn embed_texts(&self, texts: &[&str]) -> Result<Tensor> {
        self.members[0].embed_texts(texts)
    }
    fn text_model_id(&self) -> String {
        self.members[0].text_model_id()
    }
    fn zero_shot(&self) -> ZeroShotQuery {
        self.members[0].zero_shot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Embeds every image as one fixed direction.
    struct Fixed {
        dir: [f32; 2],
        id: &'static str,
    }

    impl ImageTextModel for Fixed {
        fn embed_images(&self, images: &Tensor) -> Result<Tensor> {
            let b = images.dims()[0];
            Ok(Tensor::new(&self.dir, images.device())?
                .unsqueeze(0)?
                .repeat((b, 1))?)
        }
        fn embed_texts(&self, texts: &[&str]) -> Result<Tensor> {
            Ok(Tensor::ones((texts.len(), 2), DType::F32, &Device::Cpu)?)
        }
        fn text_model_id(&self) -> String {
            self.id.into()
        }
        fn zero_shot(&self) -> ZeroShotQuery {
            ZeroShotQuery {
                captions: tower::Captions::Emoji,
                logit_scale: 7.0,
            }
        }
    }

    #[test]
    fn resize_averages_blocks() {
        let x = Tensor::arange(0f32, 16.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 4, 4))
            .unwrap();
        let y: Vec<f32> = resize_images(&x, 2)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        // Means of four small integers: exact in f32.
        assert_eq!(y, [2.5, 4.5, 10.5, 12.5]);
        assert_eq!(resize_images(&x, 4).unwrap().dims(), &[1, 1, 4, 4]);
        assert_eq!(resize_images(&x, 3).unwrap().dims(), &[1, 1, 3, 3]);
    }

    #[test]
    fn ensemble_normalises_the_sum_and_needs_one_text_model() {
        let a = Fixed {
            dir: [1.0, 0.0],
            id: "minilm",
        };
        let b = Fixed {
            dir: [0.0, 1.0],
            id: "minilm",
        };
        let e = Ensemble::new(vec![Box::new(a), Box::new(b)]).unwrap();
        let x = Tensor::zeros((3, 1, 4, 4), DType::F32, &Device::Cpu).unwrap();
        let v: Vec<Vec<f32>> = e.embed_images(&x).unwrap().to_vec2().unwrap();
        let h = std::f32::consts::FRAC_1_SQRT_2;
        for row in v {
            // One division of (1, 1) by sqrt(2): within an ulp of 1/sqrt(2).
            assert!(row.iter().all(|x| (x - h).abs() <= f32::EPSILON), "{row:?}");
        }
        assert_eq!(e.zero_shot().logit_scale, 7.0);
        let c = Fixed {
            dir: [1.0, 0.0],
            id: "clip",
        };
        let d = Fixed {
            dir: [1.0, 0.0],
            id: "minilm",
        };
        let err = Ensemble::new(vec![Box::new(d), Box::new(c)]).err().unwrap();
        assert!(err.to_string().contains("clip"), "{err}");
        assert!(Ensemble::new(vec![]).is_err());
    }
}
