//! Emoji: an open-vocabulary image-text set of named things, each drawn four times.
//!
//! The npm packages `emoji-datasource-{google,apple,twitter,facebook}` 16.0.0 (catalog assets
//! `emoji-google`, `emoji-apple`, `emoji-twitter`, `emoji-facebook`) each hold 64x64 RGBA PNGs
//! of the same emoji (`package/img/<style>/64/<image>`) and `package/emoji.json` describing
//! them. The tarballs are read in place: one pass through each, keeping only the wanted PNGs.
//!
//! **Classes are concepts** ("dolphin", "police car", "cocktail glass"), and each concept has
//! four images, one per drawing style: a few-shot task can show one vendor's dolphin and ask
//! about another's.
//!
//! **Which concepts** (the rule [`emoji_split_csvs`] applies to `emoji.json`): nameable things.
//! - categories Animals & Nature, Food & Drink, Travel & Places, Activities and Objects only
//!   (no Flags, Symbols, Smileys & Emotion, People & Body or Component);
//! - base emoji only: `emoji.json`'s top-level entries, never their `skin_variations`;
//! - no keycaps (subcategory "keycap") and no clock faces (names starting "CLOCK FACE": the 24
//!   "one o'clock" .. "twelve-thirty" dials; watch, hourglass, alarm clock are kept);
//! - only emoji all four packages draw (`has_img_<style>` true for every style);
//! - the class name is the lower-cased `name` field ("DOLPHIN" -> "dolphin"); where two kept
//!   concepts share a name, the first in Unicode's order (`sort_order`) is kept.
//!
//! **Splits** are of concepts, not images, so no class is seen in two splits: the kept concepts,
//! in `sort_order`, are shuffled by Fisher-Yates driven by SplitMix64 seeded with
//! [`EMOJI_SPLIT_SEED`] (0), and cut 60/20/20 (train and val sizes rounded, test the rest);
//! each split is then listed in `sort_order`. The splits ship as `datasets/emoji/{train,val,
//! test}.csv` (`image,name,category,subcategory`), embedded in the library, so a loader needs
//! the tarballs only for pixels and short names. Class index = row order in the split's CSV.
//!
//! **Pixels**: each RGBA PNG is composited over a white background ([`EMOJI_BACKGROUND`]),
//! then resized to the wanted size with the Triangle (bilinear) filter.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use spae_assets::AssetCache;

use crate::{DataError, LabeledImages, Result};

/// The drawing styles: one npm package each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EmojiStyle {
    Google,
    Apple,
    Twitter,
    Facebook,
}

/// The four styles, in the order the loader reads them by default.
pub fn all_styles() -> [EmojiStyle; 4] {
    [
        EmojiStyle::Google,
        EmojiStyle::Apple,
        EmojiStyle::Twitter,
        EmojiStyle::Facebook,
    ]
}

impl EmojiStyle {
    /// "google", "apple", "twitter", "facebook": the name in the package and its image paths.
    pub fn name(self) -> &'static str {
        match self {
            Self::Google => "google",
            Self::Apple => "apple",
            Self::Twitter => "twitter",
            Self::Facebook => "facebook",
        }
    }

    /// The catalog asset holding this style's tarball (`emoji-google`, ...).
    pub fn asset(self) -> &'static str {
        match self {
            Self::Google => "emoji-google",
            Self::Apple => "emoji-apple",
            Self::Twitter => "emoji-twitter",
            Self::Facebook => "emoji-facebook",
        }
    }

    /// The tarball member holding this style's 64x64 drawing of `image` (`1f42c.png`).
    pub fn member(self, image: &str) -> String {
        format!("package/img/{}/64/{image}", self.name())
    }
}

impl std::fmt::Display for EmojiStyle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for EmojiStyle {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        all_styles()
            .into_iter()
            .find(|st| st.name() == s)
            .ok_or_else(|| {
                format!("emoji style {s:?}: expected google, apple, twitter or facebook")
            })
    }
}

/// Which third of the concepts (60/20/20).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EmojiSplit {
    Train,
    Val,
    Test,
}

impl EmojiSplit {
    pub const ALL: [EmojiSplit; 3] = [Self::Train, Self::Val, Self::Test];

    /// "train", "val", "test" (also the CSV's file stem).
    pub fn name(self) -> &'static str {
        match self {
            Self::Train => "train",
            Self::Val => "val",
            Self::Test => "test",
        }
    }
}

impl std::str::FromStr for EmojiSplit {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "train" => Ok(Self::Train),
            "val" => Ok(Self::Val),
            "test" => Ok(Self::Test),
            other => Err(format!(
                "emoji split {other:?}: expected train, val or test"
            )),
        }
    }
}

/// One class: a named thing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmojiConcept {
    /// `emoji.json`'s image file name, the same in every style (`1f42c.png`).
    pub image: String,
    /// The class name: `emoji.json`'s `name`, lower-cased ("dolphin").
    pub name: String,
    /// `emoji.json`'s `short_names` ("dolphin", "flipper").
    pub short_names: Vec<String>,
    pub category: String,
    pub subcategory: String,
}

/// A split of the emoji set: images labelled by concept, and which style drew each.
#[derive(Debug, Clone)]
pub struct EmojiSet {
    /// RGB (3 channels), `size` x `size`; label = index into `concepts`; class names are the
    /// concepts' names. Images are grouped by concept (CSV order), styles in the order asked.
    pub images: LabeledImages,
    /// The style of each image.
    pub styles: Vec<EmojiStyle>,
    /// The classes, in label order.
    pub concepts: Vec<EmojiConcept>,
}

/// The colour transparent pixels are composited over: white, as every image file a command
/// reads is ([`spae_core::imageio::BACKGROUND`]).
pub const EMOJI_BACKGROUND: [u8; 3] = spae_core::imageio::BACKGROUND;

/// The seed of the concept shuffle that cuts the splits.
pub const EMOJI_SPLIT_SEED: u64 = 0;

/// Side of the PNGs in the packages.
const SOURCE_SIDE: u32 = 64;

/// The categories kept: things one can name.
const KEPT_CATEGORIES: [&str; 5] = [
    "Animals & Nature",
    "Food & Drink",
    "Travel & Places",
    "Activities",
    "Objects",
];

const CSV_HEADER: &str = "image,name,category,subcategory";

const TRAIN_CSV: &str = include_str!("../emoji/train.csv");
const VAL_CSV: &str = include_str!("../emoji/val.csv");
const TEST_CSV: &str = include_str!("../emoji/test.csv");

/// The shipped CSV of `split` (`image,name,category,subcategory`, one concept a row).
pub fn emoji_split_csv(split: EmojiSplit) -> &'static str {
    match split {
        EmojiSplit::Train => TRAIN_CSV,
        EmojiSplit::Val => VAL_CSV,
        EmojiSplit::Test => TEST_CSV,
    }
}

/// The split's concepts as the shipped CSV lists them (short names empty: they come from
/// the packages' `emoji.json`, see [`emoji`]).
pub fn emoji_split_concepts(split: EmojiSplit) -> Result<Vec<EmojiConcept>> {
    let file = PathBuf::from(format!("datasets/emoji/{}.csv", split.name()));
    parse_csv(&file, emoji_split_csv(split))
}

/// A split of the emoji set, from the cached packages (fetched on first use): every concept
/// of `split`, drawn in each of `styles`, composited over white and resized to `size`.
pub fn emoji(
    cache: &AssetCache,
    split: EmojiSplit,
    styles: &[EmojiStyle],
    size: usize,
) -> Result<EmojiSet> {
    let mut archives = Vec::with_capacity(styles.len());
    for &style in styles {
        archives.push((style, cache.fetch_named(style.asset())?));
    }
    read_emoji(&archives, split, size)
}

/// [`emoji`] from tarballs at hand: `(style, path of emoji-datasource-<style>-*.tgz)`.
/// The tarballs are read at once, one thread each.
pub fn read_emoji(
    archives: &[(EmojiStyle, PathBuf)],
    split: EmojiSplit,
    size: usize,
) -> Result<EmojiSet> {
    let what = || PathBuf::from(format!("emoji {}", split.name()));
    if archives.is_empty() {
        return Err(DataError::Layout {
            path: what(),
            reason: "no emoji styles asked for".into(),
        });
    }
    if size == 0 {
        return Err(DataError::Layout {
            path: what(),
            reason: "image size 0".into(),
        });
    }
    let mut seen = HashSet::new();
    for (style, path) in archives {
        if !seen.insert(*style) {
            return Err(DataError::Layout {
                path: path.clone(),
                reason: format!("style {style} asked for twice"),
            });
        }
    }
    let mut concepts = emoji_split_concepts(split)?;
    let read: Vec<Result<StyleImages>> = std::thread::scope(|s| {
        let handles: Vec<_> = archives
            .iter()
            .map(|(style, path)| {
                let concepts = &concepts;
                s.spawn(move || read_style(path, *style, concepts, size))
            })
            .collect();
        handles
            .into_iter()
            .zip(archives)
            .map(|(h, (_, path))| {
                h.join().unwrap_or_else(|_| {
                    Err(DataError::Format {
                        path: path.clone(),
                        reason: "the thread reading this archive panicked".into(),
                    })
                })
            })
            .collect()
    });
    let mut per_style = Vec::with_capacity(read.len());
    for r in read {
        per_style.push(r?);
    }
    // Short names from the first archive's emoji.json (the four packages ship the same one).
    if let Some(first) = per_style.first_mut() {
        for (c, names) in concepts.iter_mut().zip(first.short_names.iter_mut()) {
            c.short_names = std::mem::take(names);
        }
    }
    let plane = 3 * size * size;
    let n = concepts.len() * archives.len();
    let mut pixels = Vec::with_capacity(n * plane);
    let mut labels = Vec::with_capacity(n);
    let mut styles = Vec::with_capacity(n);
    for label in 0..concepts.len() {
        for ((style, _), imgs) in archives.iter().zip(&per_style) {
            pixels.extend_from_slice(&imgs.chw[label]);
            labels.push(label as u32);
            styles.push(*style);
        }
    }
    Ok(EmojiSet {
        images: LabeledImages {
            name: format!("emoji-{}", split.name()),
            channels: 3,
            size,
            pixels,
            labels,
            class_names: concepts.iter().map(|c| c.name.clone()).collect(),
        },
        styles,
        concepts,
    })
}

/// One style's images of a split's concepts (CHW, in concept order) and their short names.
struct StyleImages {
    chw: Vec<Vec<u8>>,
    short_names: Vec<Vec<String>>,
}

fn bad(path: &Path, member: &str, reason: impl std::fmt::Display) -> DataError {
    DataError::Format {
        path: path.to_path_buf(),
        reason: format!("{member}: {reason}"),
    }
}

const EMOJI_JSON: &str = "package/emoji.json";

/// One pass through `tgz`: `emoji.json` (checked against the CSV rows) and the wanted PNGs.
fn read_style(
    tgz: &Path,
    style: EmojiStyle,
    concepts: &[EmojiConcept],
    size: usize,
) -> Result<StyleImages> {
    let wanted: HashMap<String, usize> = concepts
        .iter()
        .enumerate()
        .map(|(i, c)| (style.member(&c.image), i))
        .collect();
    let mut chw: Vec<Option<Vec<u8>>> = vec![None; concepts.len()];
    let mut found = 0;
    let mut short_names = None;
    let file = std::fs::File::open(tgz).map_err(|source| DataError::Io {
        path: tgz.to_path_buf(),
        source,
    })?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
    let entries = tar.entries().map_err(|e| bad(tgz, "archive", e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(tgz, "archive", e))?;
        let member = entry
            .path()
            .map_err(|e| bad(tgz, "archive", e))?
            .to_string_lossy()
            .into_owned();
        if member == EMOJI_JSON {
            let mut buf = Vec::new();
            entry
                .read_to_end(&mut buf)
                .map_err(|e| bad(tgz, &member, e))?;
            short_names = Some(check_against_json(tgz, &buf, style, concepts)?);
        } else if let Some(&i) = wanted.get(&member) {
            let mut buf = Vec::new();
            entry
                .read_to_end(&mut buf)
                .map_err(|e| bad(tgz, &member, e))?;
            if chw[i].is_none() {
                found += 1;
            }
            chw[i] = Some(decode(&buf, size).map_err(|reason| bad(tgz, &member, reason))?);
        }
        // The PNGs come after emoji.json and before the sprite sheets: stop once all are in.
        if found == concepts.len() && short_names.is_some() {
            break;
        }
    }
    let short_names =
        short_names.ok_or_else(|| bad(tgz, EMOJI_JSON, "missing from the archive"))?;
    let chw = chw
        .into_iter()
        .zip(concepts)
        .map(|(img, c)| {
            img.ok_or_else(|| {
                bad(
                    tgz,
                    &style.member(&c.image),
                    format!("missing from the archive ({:?})", c.name),
                )
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(StyleImages { chw, short_names })
}

/// A 64x64 PNG as `size` x `size` RGB (CHW), composited over [`EMOJI_BACKGROUND`].
fn decode(png: &[u8], size: usize) -> std::result::Result<Vec<u8>, String> {
    let img = image::load_from_memory_with_format(png, image::ImageFormat::Png)
        .map_err(|e| format!("not a readable PNG: {e}"))?;
    if (img.width(), img.height()) != (SOURCE_SIDE, SOURCE_SIDE) {
        return Err(format!(
            "image is {}x{}, expected {SOURCE_SIDE}x{SOURCE_SIDE}",
            img.width(),
            img.height()
        ));
    }
    let mut rgb = spae_core::imageio::composite_over_background(&img).to_rgb8();
    if size as u32 != SOURCE_SIDE {
        let filter = image::imageops::FilterType::Triangle;
        rgb = image::imageops::resize(&rgb, size as u32, size as u32, filter);
    }
    let mut chw = Vec::with_capacity(3 * size * size);
    for c in 0..3 {
        chw.extend(rgb.pixels().map(|p| p.0[c]));
    }
    Ok(chw)
}

/// An `emoji.json` entry, the fields this module reads.
#[derive(Debug, Clone, serde::Deserialize)]
struct JsonEmoji {
    name: Option<String>,
    image: String,
    #[serde(default)]
    short_names: Vec<String>,
    category: String,
    subcategory: String,
    sort_order: i64,
    #[serde(default)]
    has_img_google: bool,
    #[serde(default)]
    has_img_apple: bool,
    #[serde(default)]
    has_img_twitter: bool,
    #[serde(default)]
    has_img_facebook: bool,
}

impl JsonEmoji {
    fn has(&self, style: EmojiStyle) -> bool {
        match style {
            EmojiStyle::Google => self.has_img_google,
            EmojiStyle::Apple => self.has_img_apple,
            EmojiStyle::Twitter => self.has_img_twitter,
            EmojiStyle::Facebook => self.has_img_facebook,
        }
    }

    fn class_name(&self) -> String {
        self.name.as_deref().unwrap_or("").to_lowercase()
    }
}

fn parse_json(path: &Path, json: &[u8]) -> Result<Vec<JsonEmoji>> {
    serde_json::from_slice(json).map_err(|e| bad(path, EMOJI_JSON, e))
}

/// Each CSV row must be an emoji of the package with this style's drawing, and the same
/// name and category; returns the rows' short names.
fn check_against_json(
    tgz: &Path,
    json: &[u8],
    style: EmojiStyle,
    concepts: &[EmojiConcept],
) -> Result<Vec<Vec<String>>> {
    let all = parse_json(tgz, json)?;
    let by_image: HashMap<&str, &JsonEmoji> = all.iter().map(|e| (e.image.as_str(), e)).collect();
    concepts
        .iter()
        .map(|c| {
            let e = by_image
                .get(c.image.as_str())
                .ok_or_else(|| bad(tgz, EMOJI_JSON, format!("no emoji with image {}", c.image)))?;
            if !e.has(style) {
                return Err(bad(
                    tgz,
                    EMOJI_JSON,
                    format!("{} ({}) has no {style} image", c.image, c.name),
                ));
            }
            if e.class_name() != c.name || e.category != c.category {
                return Err(bad(
                    tgz,
                    EMOJI_JSON,
                    format!(
                        "{} is {:?} in {:?}, the split lists {:?} in {:?}",
                        c.image,
                        e.class_name(),
                        e.category,
                        c.name,
                        c.category
                    ),
                ));
            }
            Ok(e.short_names.clone())
        })
        .collect()
}

/// `package/emoji.json` out of an `emoji-datasource-*` tarball (it comes near the start).
pub fn read_emoji_json(tgz: &Path) -> Result<Vec<u8>> {
    let file = std::fs::File::open(tgz).map_err(|source| DataError::Io {
        path: tgz.to_path_buf(),
        source,
    })?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
    for entry in tar.entries().map_err(|e| bad(tgz, "archive", e))? {
        let mut entry = entry.map_err(|e| bad(tgz, "archive", e))?;
        if entry.path().map_err(|e| bad(tgz, "archive", e))? == Path::new(EMOJI_JSON) {
            let mut buf = Vec::new();
            entry
                .read_to_end(&mut buf)
                .map_err(|e| bad(tgz, EMOJI_JSON, e))?;
            return Ok(buf);
        }
    }
    Err(bad(tgz, EMOJI_JSON, "missing from the archive"))
}

/// SplitMix64 (Steele et al. 2014): a tiny generator whose stream is fixed by its definition,
/// so the shipped splits do not depend on a library's choice of algorithm.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// The kept concepts of an `emoji.json`, in `sort_order` (the rule in the module docs).
pub fn emoji_concepts_from_json(emoji_json: &[u8]) -> Result<Vec<EmojiConcept>> {
    let path = Path::new(EMOJI_JSON);
    let mut all = parse_json(path, emoji_json)?;
    all.sort_by(|a, b| (a.sort_order, &a.image).cmp(&(b.sort_order, &b.image)));
    let mut names = HashSet::new();
    let mut kept = Vec::new();
    for e in all {
        // Nameable things only: five categories; no keycaps or clock dials; all four drawings;
        // a name, and the first concept of each name. (Skin-tone variants are nested under
        // their base emoji in `skin_variations`, which this never reads.)
        let name = e.class_name();
        let keep = KEPT_CATEGORIES.contains(&e.category.as_str())
            && e.subcategory != "keycap"
            && !name.starts_with("clock face")
            && all_styles().into_iter().all(|s| e.has(s))
            && !name.trim().is_empty();
        if keep && names.insert(name.clone()) {
            kept.push(EmojiConcept {
                image: e.image,
                name,
                short_names: e.short_names,
                category: e.category,
                subcategory: e.subcategory,
            });
        }
    }
    Ok(kept)
}

/// The split CSVs (train, val, test) the rule gives for an `emoji.json`: the generator of the
/// shipped `datasets/emoji/*.csv` (rerun it with
/// `cargo test -p spae-datasets --test emoji -- --ignored emoji_regenerate`).
pub fn emoji_split_csvs(emoji_json: &[u8]) -> Result<[String; 3]> {
    let kept = emoji_concepts_from_json(emoji_json)?;
    let n = kept.len();
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = SplitMix64(EMOJI_SPLIT_SEED);
    for i in (1..n).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    let n_train = (n * 6 + 5) / 10;
    let n_val = (n * 2 + 5) / 10;
    let cuts = [
        &order[..n_train],
        &order[n_train..n_train + n_val],
        &order[n_train + n_val..],
    ];
    Ok(cuts.map(|part| {
        let mut part = part.to_vec();
        part.sort_unstable();
        let mut out = format!("{CSV_HEADER}\n");
        for i in part {
            let c = &kept[i];
            let row = [&c.image, &c.name, &c.category, &c.subcategory].map(|f| csv_field(f));
            out.push_str(&row.join(","));
            out.push('\n');
        }
        out
    }))
}

/// A CSV field, quoted when it holds a comma, quote or line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Split one CSV line into fields (quoted fields may hold commas and doubled quotes).
fn csv_fields(line: &str) -> std::result::Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(ch) = chars.next() {
        match (quoted, ch) {
            (false, '"') if at_start => quoted = true,
            (true, '"') if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            (true, '"') => {
                quoted = false;
                if !matches!(chars.peek(), None | Some(',')) {
                    return Err("text after a closing quote".into());
                }
            }
            (false, ',') => {
                fields.push(std::mem::take(&mut cur));
                at_start = true;
                continue;
            }
            _ => cur.push(ch),
        }
        at_start = false;
    }
    if quoted {
        return Err("unterminated quote".into());
    }
    fields.push(cur);
    Ok(fields)
}

fn parse_csv(file: &Path, text: &str) -> Result<Vec<EmojiConcept>> {
    let mut lines = text.lines().enumerate();
    let err = |line: usize, reason: String| DataError::Format {
        path: file.to_path_buf(),
        reason: format!("line {}: {reason}", line + 1),
    };
    match lines.next() {
        Some((_, h)) if h.trim_end() == CSV_HEADER => {}
        other => {
            return Err(err(
                0,
                format!(
                    "header is {:?}, expected {CSV_HEADER:?}",
                    other.map(|(_, h)| h).unwrap_or("")
                ),
            ))
        }
    }
    let mut out = Vec::new();
    for (i, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let fields = csv_fields(line.trim_end_matches('\r')).map_err(|r| err(i, r))?;
        let [image, name, category, subcategory]: [String; 4] =
            fields.try_into().map_err(|f: Vec<String>| {
                err(i, format!("{} fields, expected 4 ({CSV_HEADER})", f.len()))
            })?;
        if image.is_empty() || name.is_empty() {
            return Err(err(i, "empty image or name".into()));
        }
        out.push(EmojiConcept {
            image,
            name,
            short_names: Vec::new(),
            category,
            subcategory,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_round_trip_with_quotes() {
        let row = ["a.png", "x, \"y\"", "Objects", "tool"].map(csv_field);
        let line = row.join(",");
        assert_eq!(line, "a.png,\"x, \"\"y\"\"\",Objects,tool");
        assert_eq!(
            csv_fields(&line).unwrap(),
            vec!["a.png", "x, \"y\"", "Objects", "tool"]
        );
        assert!(csv_fields("\"open").is_err());
        let bad = parse_csv(
            Path::new("t.csv"),
            "image,name,category,subcategory\na,b,c\n",
        )
        .unwrap_err()
        .to_string();
        assert!(bad.contains("t.csv") && bad.contains("line 2"), "{bad}");
    }

    #[test]
    fn splitmix_reference_values() {
        // First outputs of SplitMix64 seeded with 0 (the reference implementation's).
        let mut r = SplitMix64(0);
        assert_eq!(r.next(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next(), 0x6e78_9e6a_a1b9_65f4);
    }

    #[test]
    fn rule_on_a_small_json() {
        let e = |name: &str, image: &str, cat: &str, sub: &str, order: i64, all: bool| {
            serde_json::json!({
                "name": name, "image": image, "short_names": [name.to_lowercase()],
                "category": cat, "subcategory": sub, "sort_order": order,
                "has_img_google": true, "has_img_apple": true,
                "has_img_twitter": true, "has_img_facebook": all,
            })
        };
        let json = serde_json::json!([
            e(
                "DOLPHIN",
                "1f42c.png",
                "Animals & Nature",
                "animal-marine",
                5,
                true
            ),
            e(
                "GRINNING FACE",
                "1f600.png",
                "Smileys & Emotion",
                "face-smiling",
                1,
                true
            ),
            e(
                "CLOCK FACE ONE OCLOCK",
                "1f550.png",
                "Travel & Places",
                "time",
                3,
                true
            ),
            e("WATCH", "231a.png", "Travel & Places", "time", 2, true),
            e(
                "POLICE CAR",
                "1f693.png",
                "Travel & Places",
                "transport-ground",
                4,
                false
            ),
            e(
                "DOLPHIN",
                "1f42d.png",
                "Animals & Nature",
                "animal-marine",
                6,
                true
            ),
        ]);
        let kept = emoji_concepts_from_json(json.to_string().as_bytes()).unwrap();
        let names: Vec<&str> = kept.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["watch", "dolphin"]);
        assert_eq!(kept[1].image, "1f42c.png");
        let csvs = emoji_split_csvs(json.to_string().as_bytes()).unwrap();
        let rows: usize = csvs.iter().map(|c| c.lines().count() - 1).sum();
        assert_eq!(rows, 2);
        assert!(csvs.iter().all(|c| c.starts_with(CSV_HEADER)));
    }

    #[test]
    fn decode_composites_over_white() {
        let mut img = image::RgbaImage::new(64, 64);
        for (x, _, p) in img.enumerate_pixels_mut() {
            // Left half transparent, right half opaque red.
            *p = if x < 32 {
                image::Rgba([0, 0, 0, 0])
            } else {
                image::Rgba([255, 0, 0, 255])
            };
        }
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let chw = decode(&png, 64).unwrap();
        let plane = 64 * 64;
        assert_eq!([chw[0], chw[plane], chw[2 * plane]], [255, 255, 255]);
        assert_eq!([chw[63], chw[plane + 63], chw[2 * plane + 63]], [255, 0, 0]);
        assert_eq!(decode(&png, 16).unwrap().len(), 3 * 16 * 16);
        assert!(decode(b"not a png", 16).unwrap_err().contains("PNG"));
    }

    /// `tokenize emoji.png` must see the pixels the tokenizer was trained on: the file reader
    /// of every command and the data set agree byte for byte, partial alpha included.
    #[test]
    fn an_emoji_file_reads_as_the_data_set_reads_it() {
        let mut img = image::RgbaImage::new(64, 64);
        for (x, y, p) in img.enumerate_pixels_mut() {
            // Every alpha from 0 to 255 over colours that vary with the position.
            *p = image::Rgba([
                (x * 4) as u8,
                (y * 4) as u8,
                200,
                ((x + 64 * y) % 256) as u8,
            ]);
        }
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let dynamic = image::load_from_memory(&png).unwrap();
        for size in [64, 32] {
            let t = spae_core::imageio::image_to_tensor(&dynamic, 3, size).unwrap();
            // Bytes / 255 and back: x / 255 * 255 rounds to x for every byte x.
            let bytes: Vec<u8> = (t * 255.0)
                .unwrap()
                .round()
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .into_iter()
                .map(|v| v as u8)
                .collect();
            assert_eq!(bytes, decode(&png, size).unwrap(), "at {size}x{size}");
        }
    }
}
