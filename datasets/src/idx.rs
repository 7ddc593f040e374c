//! The IDX format of MNIST and Fashion-MNIST (big-endian header, then raw bytes), gzip or not.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use crate::{DataError, Result};

fn fmt_err(path: &Path, reason: impl Into<String>) -> DataError {
    DataError::Format {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn read_all(path: &Path) -> Result<Vec<u8>> {
    let f = File::open(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::GzDecoder::new(BufReader::new(f)))
    } else {
        Box::new(BufReader::new(f))
    };
    let mut buf = Vec::new();
    reader
        .read_to_end(&mut buf)
        .map_err(|e| fmt_err(path, format!("cannot decompress: {e}")))?;
    Ok(buf)
}

fn header(path: &Path, buf: &[u8], magic: u32, dims: usize) -> Result<Vec<usize>> {
    let need = 4 + 4 * dims;
    if buf.len() < need {
        return Err(fmt_err(
            path,
            format!("{} bytes: too short for an IDX header", buf.len()),
        ));
    }
    let word =
        |i: usize| u32::from_be_bytes([buf[4 * i], buf[4 * i + 1], buf[4 * i + 2], buf[4 * i + 3]]);
    if word(0) != magic {
        return Err(fmt_err(
            path,
            format!("IDX magic is {:#010x}, expected {magic:#010x}", word(0)),
        ));
    }
    let shape: Vec<usize> = (1..=dims).map(|i| word(i) as usize).collect();
    let expected = need + shape.iter().product::<usize>();
    if buf.len() != expected {
        return Err(fmt_err(
            path,
            format!(
                "{} bytes, but the header {shape:?} needs {expected} (truncated?)",
                buf.len()
            ),
        ));
    }
    Ok(shape)
}

/// Square gray images from an IDX3 file: (side, N * side * side bytes).
pub fn read_idx_images(path: &Path) -> Result<(usize, Vec<u8>)> {
    let buf = read_all(path)?;
    let shape = header(path, &buf, 0x0000_0803, 3)?;
    if shape[1] != shape[2] {
        return Err(fmt_err(
            path,
            format!("images are {}x{}, expected square", shape[1], shape[2]),
        ));
    }
    Ok((shape[1], buf[16..].to_vec()))
}

/// Labels from an IDX1 file.
pub fn read_idx_labels(path: &Path) -> Result<Vec<u32>> {
    let buf = read_all(path)?;
    header(path, &buf, 0x0000_0801, 1)?;
    Ok(buf[8..].iter().map(|&b| b as u32).collect())
}

pub(crate) fn check_pair(path: &Path, images: usize, labels: usize) -> Result<()> {
    if images != labels {
        return Err(fmt_err(
            path,
            format!("{images} images but {labels} labels"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx3(n: u32, side: u32) -> Vec<u8> {
        let mut v = Vec::new();
        for w in [0x0803u32, n, side, side] {
            v.extend(w.to_be_bytes());
        }
        v.extend((0..n * side * side).map(|i| i as u8));
        v
    }

    #[test]
    fn reads_plain_and_gzip_idx() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("x-images-idx3-ubyte");
        std::fs::write(&plain, idx3(2, 3)).unwrap();
        let (side, px) = read_idx_images(&plain).unwrap();
        assert_eq!((side, px.len(), px[17]), (3, 18, 17));

        let gz = dir.path().join("x-images-idx3-ubyte.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, &idx3(2, 3)).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        assert_eq!(read_idx_images(&gz).unwrap(), (side, px));
    }

    #[test]
    fn truncated_or_wrong_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("short-idx3-ubyte");
        let mut bytes = idx3(2, 3);
        bytes.pop();
        std::fs::write(&p, bytes).unwrap();
        let e = read_idx_images(&p).unwrap_err().to_string();
        assert!(
            e.contains("short-idx3-ubyte") && e.contains("truncated"),
            "{e}"
        );
        let e = read_idx_labels(&p).unwrap_err().to_string();
        assert!(e.contains("magic"), "{e}");
        let gz = dir.path().join("bad.gz");
        std::fs::write(&gz, b"not gzip").unwrap();
        assert!(read_idx_labels(&gz)
            .unwrap_err()
            .to_string()
            .contains("bad.gz"));
    }
}
