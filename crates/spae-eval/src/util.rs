//! Small helpers every result file uses: hashes, file-name slugs, atomic writes.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Context, Result};

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub fn sha256_file(path: &Path) -> Result<String> {
    Ok(sha256_hex(
        &std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
    ))
}

/// `s` as a file name: ASCII letters, digits and '-' kept, anything else '_'.
pub fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// This process's arguments after `command`, as a result file quotes what wrote it.
pub fn invocation(command: &str) -> String {
    std::env::args()
        .skip_while(|a| a != command)
        .skip(1)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Writes `text` to `path` through a temporary file, so a reader never sees half of it.
pub fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// A single-threaded async runtime: local models compute on this thread, API backends need
/// the reactor.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// The sampling seed of `layer` of image `image` in a run seeded `seed`: every LLM call of a
/// run has its own, so a rerun (or a resumed run) draws the same words for the same call.
pub fn layer_seed(seed: u64, image: usize, layer: usize) -> u64 {
    seed.wrapping_mul(1_000_003)
        .wrapping_add((image * 64 + layer) as u64)
}

/// The seed of test item `item`'s own draws (its support set, its corruption) in a run seeded
/// `seed`, independent of which items ran before it.
pub fn item_seed(seed: u64, item: usize) -> u64 {
    seed ^ 0x9E37_79B9u64.wrapping_mul(item as u64 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The values result files were drawn with: changing them would change every rerun.
    #[test]
    fn seeds_keep_their_values() {
        assert_eq!(layer_seed(0, 2, 1), 129);
        assert_eq!(layer_seed(1, 0, 0), 1_000_003);
        assert_eq!(item_seed(0, 0), 0x9E37_79B9);
        assert_eq!(item_seed(5, 1), 5 ^ (2 * 0x9E37_79B9u64));
    }
}
