//! The emoji set on the real packages (fetched into the cache on first use, ~340 MB).

use std::collections::HashSet;
use std::io::Read;
use std::path::Path;
use std::time::Instant;

use spae_assets::AssetCache;
use spae_datasets::{
    all_styles, emoji, emoji_concepts_from_json, emoji_split_concepts, emoji_split_csv,
    emoji_split_csvs, read_emoji_json, EmojiSplit, EmojiStyle,
};

fn google_json() -> Vec<u8> {
    let tgz = AssetCache::from_env()
        .fetch_named(EmojiStyle::Google.asset())
        .unwrap();
    read_emoji_json(&tgz).unwrap()
}

/// Rewrite `datasets/emoji/*.csv` from the package's emoji.json.
#[test]
#[ignore = "regenerates the shipped split files"]
fn emoji_regenerate_split_csvs() {
    let csvs = emoji_split_csvs(&google_json()).unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("emoji");
    for (split, csv) in EmojiSplit::ALL.iter().zip(csvs) {
        std::fs::write(dir.join(format!("{}.csv", split.name())), csv).unwrap();
    }
}

#[test]
fn emoji_shipped_splits_are_what_the_rule_gives() {
    let csvs = emoji_split_csvs(&google_json()).unwrap();
    for (split, csv) in EmojiSplit::ALL.iter().zip(&csvs) {
        assert!(
            emoji_split_csv(*split) == csv.as_str(),
            "datasets/emoji/{}.csv differs from the rule; rerun the ignored `emoji_regenerate_split_csvs` test",
            split.name()
        );
    }
}

#[test]
fn emoji_splits_are_disjoint_and_sized() {
    let splits: Vec<_> = EmojiSplit::ALL
        .iter()
        .map(|&s| emoji_split_concepts(s).unwrap())
        .collect();
    let mut images = HashSet::new();
    let mut names = HashSet::new();
    for c in splits.iter().flatten() {
        assert!(images.insert(c.image.clone()), "{} in two rows", c.image);
        assert!(names.insert(c.name.clone()), "{:?} in two rows", c.name);
    }
    let kept = emoji_concepts_from_json(&google_json()).unwrap();
    let n = kept.len();
    assert_eq!(images.len(), n);
    assert!((800..900).contains(&n), "{n} concepts kept");
    for (part, share) in splits.iter().zip([0.6, 0.2, 0.2]) {
        let want = n as f64 * share;
        assert!(
            (part.len() as f64 - want).abs() <= 1.0,
            "{} vs {want}",
            part.len()
        );
    }
    let kept_images: HashSet<_> = kept.iter().map(|c| c.image.clone()).collect();
    assert_eq!(kept_images, images);
    for must in ["dolphin", "police car", "cocktail glass"] {
        assert!(names.contains(must), "{must:?} missing");
    }
    let mut categories = std::collections::BTreeMap::new();
    for c in &kept {
        *categories.entry(c.category.as_str()).or_insert(0) += 1;
    }
    let sizes: Vec<usize> = splits.iter().map(Vec::len).collect();
    eprintln!("kept {n} concepts, splits {sizes:?}, categories {categories:?}");
    assert_eq!(categories.len(), 5);
    assert!(kept.iter().all(|c| !c.name.starts_with("clock face")));
}

#[test]
fn emoji_every_concept_has_all_four_styles_in_the_packages() {
    let cache = AssetCache::from_env();
    let all: Vec<_> = EmojiSplit::ALL
        .iter()
        .flat_map(|&s| emoji_split_concepts(s).unwrap())
        .collect();
    for style in all_styles() {
        let tgz = cache.fetch_named(style.asset()).unwrap();
        let mut wanted: HashSet<String> = all.iter().map(|c| style.member(&c.image)).collect();
        let f = std::fs::File::open(&tgz).unwrap();
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(f));
        for entry in tar.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            if wanted.remove(&path) {
                let mut png = Vec::new();
                entry.read_to_end(&mut png).unwrap();
                assert!(png.starts_with(b"\x89PNG"), "{path}");
            }
            if wanted.is_empty() {
                break;
            }
        }
        assert!(wanted.is_empty(), "{style}: missing {wanted:?}");
    }
}

#[test]
fn emoji_test_split_at_32_all_styles() {
    let cache = AssetCache::from_env();
    for style in all_styles() {
        cache.fetch_named(style.asset()).unwrap();
    }
    let t = Instant::now();
    let set = emoji(&cache, EmojiSplit::Test, &all_styles(), 32).unwrap();
    eprintln!(
        "emoji test split: {} concepts, {} images in {:.2?}",
        set.concepts.len(),
        set.images.len(),
        t.elapsed()
    );
    let imgs = &set.images;
    assert_eq!((imgs.channels, imgs.size), (3, 32));
    assert_eq!(imgs.len(), 4 * set.concepts.len());
    assert_eq!(imgs.pixels.len(), imgs.len() * 3 * 32 * 32);
    assert_eq!(set.styles.len(), imgs.len());
    assert_eq!(imgs.class_names.len(), set.concepts.len());
    for (label, chunk) in imgs.labels.chunks(4).enumerate() {
        assert_eq!(chunk, [label as u32; 4]);
    }
    for chunk in set.styles.chunks(4) {
        assert_eq!(chunk, all_styles());
    }
    // Over white: most corners are white (a few drawings fill their square: a sunrise, a
    // night sky), and each drawing has some non-white pixels.
    let white_corners = (0..imgs.len())
        .filter(|&i| {
            let (img, plane) = (imgs.image(i), 32 * 32);
            [img[0], img[plane], img[2 * plane]] == [255; 3]
        })
        .count();
    assert!(
        white_corners * 10 > imgs.len() * 9,
        "{white_corners} of {} white corners",
        imgs.len()
    );
    // Every drawing shows something (a few are faint: the spider web's thin grey lines).
    for i in 0..imgs.len() {
        let min = imgs.image(i).iter().copied().min().unwrap_or(255);
        assert!(
            min < 250,
            "image {i} ({}) is blank",
            imgs.class_names[imgs.labels[i] as usize]
        );
    }
    let dark = (0..imgs.len())
        .filter(|&i| imgs.image(i).iter().any(|&v| v < 128))
        .count();
    assert!(
        dark * 10 > imgs.len() * 9,
        "{dark} of {} have dark pixels",
        imgs.len()
    );
    assert!(set.concepts.iter().all(|c| !c.short_names.is_empty()));
    let names: HashSet<&str> = EmojiSplit::ALL
        .iter()
        .flat_map(|&s| emoji_split_csv(s).lines().skip(1))
        .filter_map(|l| l.split(',').nth(1))
        .collect();
    assert!(names.contains("dolphin"));
    let b = imgs.batch(&[0, 1], &candle_core::Device::Cpu).unwrap();
    let max: f32 = b.max_all().unwrap().to_scalar().unwrap();
    assert!(max <= 1.0 && max > 0.9);

    // One style, native size: the same concepts, one image each.
    let one = emoji(&cache, EmojiSplit::Test, &[EmojiStyle::Twitter], 64).unwrap();
    assert_eq!(one.images.len(), set.concepts.len());
    assert_eq!(one.images.size, 64);
    assert!(emoji(&cache, EmojiSplit::Test, &[], 32).is_err());
    let twice = emoji(
        &cache,
        EmojiSplit::Val,
        &[EmojiStyle::Apple, EmojiStyle::Apple],
        32,
    )
    .unwrap_err()
    .to_string();
    assert!(twice.contains("twice"), "{twice}");
    assert_eq!("val".parse::<EmojiSplit>(), Ok(EmojiSplit::Val));
    assert_eq!("google".parse::<EmojiStyle>(), Ok(EmojiStyle::Google));
}
