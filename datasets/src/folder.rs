//! The image-folder layout: `root/<class>/*.{png,jpg,jpeg}`, classes sorted by name.

use std::path::{Path, PathBuf};

use candle_core::DType;

use crate::{DataError, LabeledImages, Result};

fn list(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| DataError::Io {
            path: dir.to_path_buf(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    out.sort();
    Ok(out)
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

/// Every image under `root/<class>/`, resized (shorter side) and centre-cropped to
/// `size` x `size`, as gray (`channels` = 1) or RGB (3). The class name is the directory name.
pub fn image_folder(root: &Path, channels: usize, size: usize) -> Result<LabeledImages> {
    let classes: Vec<PathBuf> = list(root)?.into_iter().filter(|p| p.is_dir()).collect();
    if classes.is_empty() {
        return Err(DataError::Layout {
            path: root.to_path_buf(),
            reason: "no class directories; expected root/<class>/*.png|jpg".into(),
        });
    }
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    let mut class_names = Vec::new();
    for (label, dir) in classes.iter().enumerate() {
        class_names.push(
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        for file in list(dir)?.into_iter().filter(|p| is_image(p)) {
            let t = spae_core::imageio::load_image(&file, channels, size)?;
            let bytes: Vec<u8> = (t * 255.0)?
                .round()?
                .to_dtype(DType::U8)?
                .flatten_all()?
                .to_vec1()?;
            pixels.extend(bytes);
            labels.push(label as u32);
        }
    }
    if labels.is_empty() {
        return Err(DataError::Layout {
            path: root.to_path_buf(),
            reason: "class directories hold no .png/.jpg/.jpeg files".into(),
        });
    }
    Ok(LabeledImages {
        name: root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        channels,
        size,
        pixels,
        labels,
        class_names,
    })
}
