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
    /// (1, V): subtracted from every cosine: half of each entry's hubness (`with_csls`),
    /// and [`EXCLUDED`] for entries left out (`only_entries`).
    penalty: Option<Tensor>,
}

/// What an entry left out by [`CodebookScorer::only_entries`] loses: cosines lie in [-1, 1],
/// so it ranks below every kept entry, and a softmax at any temperature used here (0.01 and
/// up) gives it exp(-10^6) = 0 without the NaN an infinity would risk.
pub const EXCLUDED: f64 = 1e4;

impl<M: ImageTextModel> CodebookScorer<M> {
    /// Embed the codebook's words (plain, without the word-start marker). With `cache`, the
    /// embeddings are read from / written to that safetensors file, keyed by a hash of the
    /// words and the text model, so the words are embedded once per codebook.
    pub fn new(model: M, codebook: &Codebook, cache: Option<&Path>) -> Result<Self> {
        let words: Vec<&str> = (0..codebook.len()).map(|i| codebook.word(i)).collect();
        let key = word_key(&model.text_model_id(), &words);
        if let Some(path) = cache.filter(|p| p.is_file()) {
            if let Some(t) = read_cached(path, &key, words.len())? {
                return Ok(Self {
                    model,
                    words: t,
                    penalty: None,
                });
            }
        }
        let t = model.embed_texts(&words)?;
        if let Some(path) = cache {
            write_cached(path, &key, &t)?;
        }
        Ok(Self {
            model,
            words: t,
            penalty: None,
        })
    }

    /// Corrects the hubness of nearest-neighbour retrieval across two embedding spaces with
    /// cross-domain similarity local scaling (CSLS; Conneau et al. 2018, Eq. 6; the hubness
    /// of zero-shot image -> word retrieval: Dinu et al. 2015) **(ours, for SPAE's relevance)**:
    /// CSLS(x, w) = 2 cos(x, w) - r(x) - r(w), where r(w) is the mean cosine of word w to
    /// its `k` nearest `reference` images (B, C, S, S). A generic word ("animal", "object")
    /// sits near many images, so it stops outranking the specific word of this image ("dog").
    /// Relevance becomes cos(x, w) - r(w) / 2: CSLS halved, less r(x) / 2, which is one
    /// constant per image, so every image ranks the entries exactly as CSLS does and the
    /// cosine scale of temperatures stays. [`Self::with_hubness`] takes r(w) from an earlier
    /// [`Self::hubness_of`] without the reference images.
    pub fn with_csls(self, reference: &Tensor, k: usize) -> Result<Self> {
        let r = self.hubness_of(reference, k)?;
        self.with_hubness(&r)
    }

    /// As `with_csls`, with each entry's r(w) (V,) already computed by [`Self::hubness_of`].
    pub fn with_hubness(self, r: &Tensor) -> Result<Self> {
        let v = self.words.dims()[0];
        if r.dims() != [v] {
            return Err(crate::SpaeError::Config(format!(
                "hubness of {:?} entries for a codebook of {v}",
                r.dims()
            )));
        }
        self.penalize(&(r.to_dtype(DType::F32)? * 0.5)?)
    }

    /// Only the entries where `keep` holds can be relevant: the others rank last and get no
    /// weight in a softmax ([`EXCLUDED`]). The codebook stays whole, so the words that carry
    /// meaning can come from a part of it (its common words, say) while reconstruction may
    /// use every entry.
    pub fn only_entries(self, keep: &[bool]) -> Result<Self> {
        let v = self.words.dims()[0];
        if keep.len() != v {
            return Err(crate::SpaeError::Config(format!(
                "{} entries chosen of a codebook of {v}",
                keep.len()
            )));
        }
        if !keep.contains(&true) {
            return Err(crate::SpaeError::Config(
                "no codebook entry is left to be relevant".into(),
            ));
        }
        let p: Vec<f32> = keep
            .iter()
            .map(|&k| if k { 0.0 } else { EXCLUDED as f32 })
            .collect();
        let p = Tensor::from_vec(p, v, &Device::Cpu)?;
        self.penalize(&p)
    }

    /// Adds `p` (V,) to what every cosine loses.
    fn penalize(mut self, p: &Tensor) -> Result<Self> {
        let p = p.to_device(self.words.device())?.unsqueeze(0)?;
        self.penalty = Some(match self.penalty.take() {
            Some(old) => (old + p)?,
            None => p,
        });
        Ok(self)
    }

    /// r(w) (V,) of CSLS: each entry's mean cosine to its `k` nearest `reference` images.
    pub fn hubness_of(&self, reference: &Tensor, k: usize) -> Result<Tensor> {
        let n = reference.dims()[0];
        let mut emb = Vec::new();
        for start in (0..n).step_by(256) {
            let len = 256.min(n - start);
            emb.push(self.model.embed_images(&reference.narrow(0, start, len)?)?);
        }
        self.hubness_of_embeddings(&Tensor::cat(&emb, 0)?, k)
    }

    /// r(w) (V,) of CSLS from the reference images' embeddings (N, D) by this scorer's model,
    /// for a caller that embeds them itself (to show progress, say).
    pub fn hubness_of_embeddings(&self, emb: &Tensor, k: usize) -> Result<Tensor> {
        let n = emb.dims()[0];
        if k == 0 || n < k {
            return Err(crate::SpaeError::Config(format!(
                "CSLS over the {k} nearest of {n} reference images: needs 1 <= k <= {n}"
            )));
        }
        let v = self.words.dims()[0];
        let mut r = Vec::with_capacity(v);
        // (V, N) at once would be 30,000 x 2,000 floats: a slice of the words at a time.
        for start in (0..v).step_by(4096) {
            let len = 4096.min(v - start);
            let cos = self.words.narrow(0, start, len)?.matmul(&emb.t()?)?;
            let (_, near) = top_relevant(&cos, k)?;
            r.push(near.mean(1)?);
        }
        Ok(Tensor::cat(&r, 0)?)
    }

    /// Relevance (B, V) of image embeddings (B, D) from this scorer's model.
    pub fn relevance_of_embeddings(&self, images: &Tensor) -> Result<Tensor> {
        let cos = images.matmul(&self.words.t()?)?;
        Ok(match &self.penalty {
            Some(h) => cos.broadcast_sub(h)?,
            None => cos,
        })
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
        self.relevance_of_embeddings(&self.model.embed_images(images)?)
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

    /// Images (B, 1, 1, 2) are their own embedding; words embed as fixed 2-d vectors.
    struct Plane;

    impl ImageTextModel for Plane {
        fn embed_images(&self, images: &Tensor) -> Result<Tensor> {
            Ok(images.flatten_from(1)?)
        }
        fn embed_texts(&self, texts: &[&str]) -> Result<Tensor> {
            let rows: Vec<f32> = texts
                .iter()
                .flat_map(|t| match *t {
                    "animal" => [1.0, 0.0],
                    "dog" => [0.8, 0.6],
                    _ => [0.8, -0.6],
                })
                .collect();
            Ok(Tensor::from_vec(rows, (texts.len(), 2), &Device::Cpu)?)
        }
        fn text_model_id(&self) -> String {
            "plane".into()
        }
        fn zero_shot(&self) -> ZeroShotQuery {
            ZeroShotQuery {
                captions: tower::Captions::Emoji,
                logit_scale: 1.0,
            }
        }
    }

    fn points(xy: &[[f32; 2]]) -> Tensor {
        let flat: Vec<f32> = xy.iter().flatten().copied().collect();
        Tensor::from_vec(flat, (xy.len(), 1, 1, 2), &Device::Cpu).unwrap()
    }

    /// A generic word near every reference image outranks the specific one by plain cosine;
    /// CSLS ranks the specific word first, and r(w) is each word's mean cosine to its k
    /// nearest reference images.
    #[test]
    fn csls_stops_a_generic_word_from_outranking_the_specific_one() {
        let info = crate::CodebookInfo {
            source: "plane".into(),
            marker: crate::WordMarker::SentencePiece,
            filter: crate::VocabFilter::default(),
            vocab_size: 3,
            projection: None,
        };
        let pieces = ["\u{2581}animal", "\u{2581}dog", "\u{2581}cat"].map(String::from);
        let rows = Tensor::zeros((3, 4), DType::F32, &Device::Cpu).unwrap();
        let codebook = Codebook::new(info, vec![0, 1, 2], pieces.to_vec(), rows).unwrap();
        let plain = CodebookScorer::new(Plane, &codebook, None).unwrap();
        // Unit vectors of exact coordinates: every cosine below is one product by 1 or 0
        // plus an exact zero, so it equals the word's coordinate bit for bit.
        let reference = points(&[[1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]);
        let r: Vec<f32> = plain.hubness_of(&reference, 1).unwrap().to_vec1().unwrap();
        assert_eq!(r, [1.0, 0.8, 0.8]);
        // k = 2: "dog" is 0.8 to (1, 0) and 0.6 to (0, 1).
        let r2: Vec<f32> = plain.hubness_of(&reference, 2).unwrap().to_vec1().unwrap();
        assert_eq!(r2[1], (0.8f32 + 0.6) / 2.0);
        assert!(
            plain.hubness_of(&reference, 4).is_err(),
            "k above the references"
        );

        // An image a little closer to "animal" (cos 0.95) than to "dog" (0.947): a margin
        // of 0.003 by cosine, 0.1 - 0.003 the other way under CSLS, far beyond rounding.
        let dog = points(&[[0.95, 0.312]]);
        let best = |s: &CodebookScorer<Plane>| -> u32 {
            let (top, _) = top_relevant(&s.relevance(&dog).unwrap(), 1).unwrap();
            top.flatten_all().unwrap().to_vec1::<u32>().unwrap()[0]
        };
        assert_eq!(best(&plain), 0, "by cosine the generic word wins");
        let csls = CodebookScorer::new(Plane, &codebook, None)
            .unwrap()
            .with_csls(&reference, 1)
            .unwrap();
        assert_eq!(best(&csls), 1, "under CSLS the specific word wins");
        let again = CodebookScorer::new(Plane, &codebook, None)
            .unwrap()
            .with_hubness(&Tensor::new(&r[..], &Device::Cpu).unwrap())
            .unwrap();
        assert_eq!(
            again.relevance(&dog).unwrap().to_vec2::<f32>().unwrap(),
            csls.relevance(&dog).unwrap().to_vec2::<f32>().unwrap(),
            "a cached r(w) gives the same relevance"
        );
        assert!(CodebookScorer::new(Plane, &codebook, None)
            .unwrap()
            .with_hubness(&Tensor::new(&[1f32, 0.8], &Device::Cpu).unwrap())
            .is_err());
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
