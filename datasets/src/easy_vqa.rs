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

/// The colours easy-VQA draws its shapes in.
pub const EASY_VQA_COLOURS: [&str; 8] = [
    "red", "green", "blue", "black", "gray", "teal", "brown", "yellow",
];

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
    /// Each image's colour (index into [`EASY_VQA_COLOURS`]), read off its questions, or
    /// where they never settle it, from its pixels.
    pub colours: Vec<Option<u32>>,
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
    for (_, a, _) in &raw {
        if !answers.contains(a) {
            return Err(bad(
                wheel,
                &qmember,
                format!("answer {a:?} is not in answers.txt"),
            ));
        }
    }
    let labels = read_off(&raw, n, &EASY_VQA_SHAPES);
    let mut colours = read_off(&raw, n, &EASY_VQA_COLOURS);
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
    fill_colours_from_pixels(&mut colours, &pixels, SIDE * SIDE);
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
        colours,
    })
}

/// Each image's attribute (shape or colour, one of `names`), read off its questions: an
/// answer naming it, an open question about "the <name>", or a yes/no question about it
/// (with "not"/"no" negating); when all names but one are ruled out, the one left.
fn read_off(raw: &[(String, String, usize)], n: usize, names: &[&str]) -> Vec<Option<u32>> {
    let mut found: Vec<Option<u32>> = vec![None; n];
    let mut ruled_out = vec![vec![false; names.len()]; n];
    for (q, a, id) in raw {
        if let Some(s) = names.iter().position(|s| s == a) {
            found[*id] = Some(s as u32);
            continue;
        }
        for (s, name) in names.iter().enumerate() {
            if !q.split(|c: char| !c.is_alphanumeric()).any(|w| w == *name) {
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
                found[*id] = Some(s as u32);
            } else {
                ruled_out[*id][s] = true;
            }
        }
    }
    for (f, out) in found.iter_mut().zip(&ruled_out) {
        if f.is_none() && out.iter().filter(|&&o| o).count() == names.len() - 1 {
            *f = out.iter().position(|&o| !o).map(|s| s as u32);
        }
    }
    found
}

/// The mean colour of an image's shape (CHW, `area` pixels per channel): the pixels far
/// from the background, which is taken from the border.
pub fn shape_colour(chw: &[u8], area: usize) -> [f32; 3] {
    let side = (area as f64).sqrt() as usize;
    let px = |i: usize| [chw[i], chw[area + i], chw[2 * area + i]];
    let border: Vec<usize> = (0..area)
        .filter(|i| i / side == 0 || i / side == side - 1 || i % side == 0 || i % side == side - 1)
        .collect();
    let mut bg = [0f32; 3];
    for &i in &border {
        for (b, v) in bg.iter_mut().zip(px(i)) {
            *b += v as f32 / border.len() as f32;
        }
    }
    let (mut sum, mut count) = ([0f32; 3], 0f32);
    for i in 0..area {
        let p = px(i);
        let d: f32 = p.iter().zip(&bg).map(|(&v, b)| (v as f32 - b).abs()).sum();
        if d > 60.0 {
            for (s, v) in sum.iter_mut().zip(p) {
                *s += v as f32;
            }
            count += 1.0;
        }
    }
    sum.map(|s| s / count.max(1.0))
}

/// Colours no question settles, from pixels **(ours)**: the shape's mean colour, matched to
/// the nearest mean of the images whose colour the questions do settle.
fn fill_colours_from_pixels(colours: &mut [Option<u32>], pixels: &[u8], area: usize) {
    let shape_colours: Vec<[f32; 3]> = (0..colours.len())
        .map(|i| shape_colour(&pixels[i * 3 * area..(i + 1) * 3 * area], area))
        .collect();
    let mut centroids = vec![([0f32; 3], 0f32); EASY_VQA_COLOURS.len()];
    for (c, rgb) in colours.iter().zip(&shape_colours) {
        if let Some(c) = c {
            let (sum, n) = &mut centroids[*c as usize];
            for (s, v) in sum.iter_mut().zip(rgb) {
                *s += v;
            }
            *n += 1.0;
        }
    }
    for (c, rgb) in colours.iter_mut().zip(&shape_colours) {
        if c.is_some() {
            continue;
        }
        *c = centroids
            .iter()
            .enumerate()
            .filter(|(_, (_, n))| *n > 0.0)
            .map(|(k, (sum, n))| {
                let d: f32 = sum.iter().zip(rgb).map(|(s, v)| (s / n - v).powi(2)).sum();
                (k, d)
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(k, _)| k as u32);
    }
}

impl EasyVqa {
    /// Image `i` in words, "a red circle" (attributes its questions leave open are left
    /// out: "a red shape", "a circle"); the ground truth of captioning **(ours)**.
    pub fn caption(&self, i: usize) -> String {
        let shape = EASY_VQA_SHAPES
            .get(self.images.labels[i] as usize)
            .copied()
            .unwrap_or("shape");
        match self.colours[i] {
            Some(c) => format!("a {} {shape}", EASY_VQA_COLOURS[c as usize]),
            None => format!("a {shape}"),
        }
    }

    /// The images labelled by colour and shape: 24 classes "red circle", ..., "yellow
    /// triangle", and a 25th, "shape", for the few whose questions leave either open. The
    /// scorer is trained on these, so the semantic layers can name colours as well as shapes.
    pub fn by_colour_and_shape(&self) -> LabeledImages {
        let mut class_names: Vec<String> = EASY_VQA_COLOURS
            .iter()
            .flat_map(|c| EASY_VQA_SHAPES.iter().map(move |s| format!("{c} {s}")))
            .collect();
        let unknown = class_names.len() as u32;
        class_names.push("shape".into());
        let labels = self
            .images
            .labels
            .iter()
            .zip(&self.colours)
            .map(|(&s, c)| match (s as usize) < EASY_VQA_SHAPES.len() {
                true => c.map_or(unknown, |c| c * EASY_VQA_SHAPES.len() as u32 + s),
                false => unknown,
            })
            .collect();
        LabeledImages {
            labels,
            class_names,
            ..self.images.clone()
        }
    }
}
