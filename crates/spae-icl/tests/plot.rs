//! `spae-icl plot`: the pyramid figure end to end, and the font error.

mod common;

use common::{bin, ok as run, sample};

#[test]
fn plot_pyramid_draws_one_row_per_image_and_a_column_per_depth() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("figures/pyramid.png");
    let data = format!("folder:{}", sample("fashion-mnist-test-60").display());
    let out = run(bin()
        .args(["plot", "pyramid", "--data", &data, "--count", "2", "-o"])
        .arg(&png));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        png.display().to_string()
    );
    let img = image::open(&png).unwrap().to_rgb8();
    // The built-in checkpoint has 7 layers: a word column (10 + 170 px), then the original
    // and 7 reconstructions of 28 x 4 = 112 px, each followed by a 10 px gap; a 34 px title,
    // then per image a 34 px label strip, the image and a gap.
    assert_eq!(
        img.dimensions(),
        (10 + 170 + 8 * (112 + 10), 34 + 2 * (34 + 112 + 10))
    );
    let first = *img.get_pixel(0, 0);
    assert!(img.pixels().any(|p| *p != first));
}

#[test]
fn plot_without_a_font_names_spae_font() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-font.ttf");
    let out = bin()
        .args(["plot", "pyramid", "--count", "1", "-o"])
        .arg(dir.path().join("p.png"))
        .env("SPAE_FONT", &missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&missing.display().to_string()), "{err}");
    assert!(
        err.contains(&format!("SPAE_FONT={}", missing.display())),
        "{err}"
    );
    assert!(!dir.path().join("p.png").exists());
}

#[test]
fn the_font_asset_is_fetched_verified_and_draws() {
    // Where no system font exists, `plot` falls back to this asset: fetch it into an empty
    // cache (from its Debian package, sha256-checked) and draw with it alone.
    let home = tempfile::tempdir().unwrap();
    let out = run(bin()
        .args(["fetch", "dejavu-sans"])
        .env("SPAE_HOME", home.path()));
    // `fetch` prints "NAME<TAB>PATH".
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let path = line.rsplit('\t').next().unwrap_or_default().to_string();
    assert!(path.ends_with("DejaVuSans.ttf"), "{path}");
    let png = home.path().join("p.png");
    let data = format!("folder:{}", sample("fashion-mnist-test-60").display());
    run(bin()
        .args(["plot", "pyramid", "--data", &data, "--count", "1", "-o"])
        .arg(&png)
        .env("SPAE_FONT", &path));
    assert!(image::open(&png).is_ok());
}
