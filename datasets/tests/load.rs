//! Loaders on real files: Fashion-MNIST fetched from its package; an image folder written here.

use spae_assets::AssetCache;
use spae_datasets::{
    easy_vqa, fashion_mnist, image_folder, mnist, read_easy_vqa, shape_colour, LabeledImages,
    Split, EASY_VQA_COLOURS,
};

#[test]
fn fashion_mnist_both_splits() {
    let cache = AssetCache::from_env();
    let test = fashion_mnist(&cache, Split::Test).unwrap();
    assert_eq!((test.len(), test.size, test.channels), (10_000, 28, 1));
    // Labels are balanced: 1,000 per class in the test split.
    let mut counts = [0usize; 10];
    test.labels.iter().for_each(|&l| counts[l as usize] += 1);
    assert_eq!(counts, [1000; 10]);
    // First test image is an ankle boot (label 9) in the published data.
    assert_eq!(test.labels[0], 9);
    assert_eq!(test.class_names[9], "boot");
    let b = test.batch(&[0, 1], &candle_core::Device::Cpu).unwrap();
    assert_eq!(b.dims(), &[2, 1, 28, 28]);
    let max: f32 = b.max_all().unwrap().to_scalar().unwrap();
    // Pixels are u8 / 255, so <= 1 exactly (255 / 255 is 1 in f32); > 0.5: these two
    // images have bright pixels, i.e. the bytes were not read as a 0..1 range already.
    assert!(max > 0.5 && max <= 1.0);
    let train = fashion_mnist(&cache, Split::Train).unwrap();
    assert_eq!(train.len(), 60_000);
}

#[test]
fn mnist_from_the_pickle_both_splits() {
    let cache = AssetCache::from_env();
    let test = mnist(&cache, Split::Test).unwrap();
    assert_eq!((test.len(), test.size, test.channels), (10_000, 28, 1));
    // The published test set starts 7, 2, 1, 0, 4.
    assert_eq!(&test.labels[..5], &[7, 2, 1, 0, 4]);
    assert_eq!(test.class_names[7], "seven");
    let mut counts = [0usize; 10];
    test.labels.iter().for_each(|&l| counts[l as usize] += 1);
    assert_eq!(counts[1], 1135);
    assert_eq!(test.image(0).iter().copied().max(), Some(255));
    let train = mnist(&cache, Split::Train).unwrap();
    assert_eq!(train.len(), 60_000);
    // No test image is in the training split (train = the pickle's train + validation).
    let test_images: std::collections::HashSet<&[u8]> =
        (0..test.len()).map(|i| test.image(i)).collect();
    let leaked = (0..train.len())
        .filter(|&i| test_images.contains(train.image(i)))
        .count();
    assert!(leaked < 10, "{leaked} test images in the training split");
    let both =
        LabeledImages::concat(vec![train, fashion_mnist(&cache, Split::Train).unwrap()]).unwrap();
    assert_eq!(both.len(), 120_000);
    assert_eq!(both.class_names.len(), 20);
    assert_eq!(both.class_names[17], "sneaker");
    assert!(both.labels[60_000..].iter().all(|&l| l >= 10));
}

#[test]
fn easy_vqa_images_questions_answers() {
    let cache = AssetCache::from_env();
    let test = easy_vqa(&cache, Split::Test).unwrap();
    assert_eq!(test.images.len(), 1_000);
    assert_eq!((test.images.size, test.images.channels), (64, 3));
    assert_eq!(test.questions.len(), 9_673);
    assert_eq!(test.answers.len(), 13);
    let q = &test.questions[0];
    assert_eq!(
        (q.question.as_str(), q.answer.as_str(), q.image),
        ("what is the red shape?", "triangle", 0)
    );
    assert_eq!(
        test.images.class_names[test.images.labels[0] as usize],
        "triangle"
    );
    let unknown = test.images.labels.iter().filter(|&&l| l == 3).count();
    assert!(unknown < 50, "{unknown} images without a known shape");
    // Colours, read off the questions the same way: image 0's "what is the red shape?".
    assert_eq!(test.colours[0], Some(0));
    assert_eq!(test.caption(0), "a red triangle");
    // Colours no question settles come from pixels: that rule agrees with the questions
    // on nearly every image whose colour they do settle.
    assert!(test.colours.iter().all(|c| c.is_some()));
    let centroids: Vec<[f32; 3]> = (0..EASY_VQA_COLOURS.len() as u32)
        .map(|k| {
            let of: Vec<[f32; 3]> = (0..test.images.len())
                .filter(|&i| test.colours[i] == Some(k))
                .map(|i| shape_colour(test.images.image(i), 64 * 64))
                .collect();
            [0, 1, 2].map(|ch| of.iter().map(|c| c[ch]).sum::<f32>() / of.len() as f32)
        })
        .collect();
    let agree = (0..test.images.len())
        .filter(|&i| {
            let c = shape_colour(test.images.image(i), 64 * 64);
            let nearest = (0..centroids.len())
                .min_by(|&a, &b| {
                    let d = |k: usize| -> f32 {
                        (0..3).map(|ch| (centroids[k][ch] - c[ch]).powi(2)).sum()
                    };
                    d(a).total_cmp(&d(b))
                })
                .map(|k| k as u32);
            nearest == test.colours[i]
        })
        .count();
    assert!(agree > 950, "pixel colour agrees on {agree} of 1000");
    // Every question about colour agrees with the colour read off for its image.
    for q in &test.questions {
        if let Some(c) = EASY_VQA_COLOURS.iter().position(|c| *c == q.answer) {
            assert_eq!(test.colours[q.image], Some(c as u32), "{q:?}");
        }
    }
    let both = test.by_colour_and_shape();
    assert_eq!(both.class_names.len(), 25);
    assert_eq!(both.class_names[both.labels[0] as usize], "red triangle");
    assert_eq!(both.pixels, test.images.pixels);
    let train = easy_vqa(&cache, Split::Train).unwrap();
    assert_eq!((train.images.len(), train.questions.len()), (4_000, 38_575));

    // A damaged wheel is an error naming the file.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("easy_vqa.whl");
    std::fs::write(&broken, b"PK\x03\x04 not really").unwrap();
    let e = read_easy_vqa(&broken, Split::Test).unwrap_err().to_string();
    assert!(e.contains("easy_vqa.whl"), "{e}");
}

#[test]
fn image_folder_layout_any_size() {
    let dir = tempfile::tempdir().unwrap();
    for (class, shade) in [("cat", 40u8), ("dog", 200u8)] {
        std::fs::create_dir(dir.path().join(class)).unwrap();
        for i in 0..2 {
            let img =
                image::RgbImage::from_pixel(50 + i * 10, 40, image::Rgb([shade, shade, shade]));
            img.save(dir.path().join(class).join(format!("{i}.png")))
                .unwrap();
        }
    }
    std::fs::write(dir.path().join("cat").join("notes.txt"), "ignored").unwrap();
    let data = image_folder(dir.path(), 3, 32).unwrap();
    assert_eq!(data.len(), 4);
    assert_eq!(data.class_names, vec!["cat", "dog"]);
    assert_eq!(data.labels, vec![0, 0, 1, 1]);
    assert_eq!(data.image(3).len(), 3 * 32 * 32);
    // A flat image resamples to the same flat value: a weighted mean of 40s whose weights sum
    // to 1 within f32 roundoff, then rounded back to u8; one level allows a resampler or
    // conversion that truncates 39.99999 instead of rounding it.
    assert!(data.image(0).iter().all(|&p| p.abs_diff(40) <= 1));

    // A corrupt image is an error naming the file.
    std::fs::write(dir.path().join("dog").join("broken.png"), b"nope").unwrap();
    let e = image_folder(dir.path(), 3, 32).unwrap_err().to_string();
    assert!(e.contains("broken.png"), "{e}");

    let empty = tempfile::tempdir().unwrap();
    let e = image_folder(empty.path(), 1, 28).unwrap_err().to_string();
    assert!(e.contains("root/<class>"), "{e}");
}
