//! Reading images into tensors and writing tensors as PNG.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use image::{imageops::FilterType, DynamicImage, GrayImage, RgbImage};

use crate::{Result, SpaeError};

fn img_err(path: &Path, reason: impl Into<String>) -> SpaeError {
    SpaeError::Image {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Read an image file as a (C, size, size) tensor in [0, 1]: converted to gray (C = 1) or
/// RGB (C = 3), its shorter side resized to `size` and the centre cropped.
pub fn load_image(path: &Path, channels: usize, size: usize) -> Result<Tensor> {
    // The format comes from the bytes, not the extension: data sets ship PNGs named .jpg.
    let img = image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| img_err(path, e.to_string()))?
        .decode()
        .map_err(|e| img_err(path, e.to_string()))?;
    image_to_tensor(&img, channels, size).map_err(|e| match e {
        SpaeError::Image { reason, .. } => img_err(path, reason),
        other => other,
    })
}

/// [`load_image`] for an image already in memory.
pub fn image_to_tensor(img: &DynamicImage, channels: usize, size: usize) -> Result<Tensor> {
    let (w, h) = (img.width(), img.height());
    if w == 0 || h == 0 {
        return Err(img_err(Path::new("<image>"), "image is empty"));
    }
    let img = if w as usize == size && h as usize == size {
        img.clone()
    } else {
        // Shorter side to `size`, then centre crop.
        let scale = size as f64 / w.min(h) as f64;
        let (nw, nh) = (
            ((w as f64 * scale).round() as u32).max(size as u32),
            ((h as f64 * scale).round() as u32).max(size as u32),
        );
        let resized = img.resize_exact(nw, nh, FilterType::Triangle);
        resized.crop_imm(
            (nw - size as u32) / 2,
            (nh - size as u32) / 2,
            size as u32,
            size as u32,
        )
    };
    let data: Vec<u8> = match channels {
        1 => img.to_luma8().into_raw(),
        3 => img.to_rgb8().into_raw(),
        c => {
            return Err(img_err(
                Path::new("<image>"),
                format!("{c} channels; expected 1 or 3"),
            ))
        }
    };
    // (h, w, c) u8 -> (c, h, w) f32 in [0, 1]
    let t = Tensor::from_vec(data, (size, size, channels), &Device::Cpu)?
        .permute((2, 0, 1))?
        .to_dtype(DType::F32)?;
    Ok((t / 255.0)?)
}

/// A (C, H, W) tensor in [0, 1] as an image (values are clamped).
pub fn tensor_to_image(t: &Tensor) -> Result<DynamicImage> {
    let (c, h, w) = t.dims3()?;
    // (c, h, w) -> (h, w, c) bytes
    let bytes: Vec<u8> = (t
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .clamp(0f32, 1f32)?
        * 255.0)?
        .round()?
        .permute((1, 2, 0))?
        .flatten_all()?
        .to_dtype(DType::U8)?
        .to_vec1()?;
    let (w, h) = (w as u32, h as u32);
    let bad = || img_err(Path::new("<tensor>"), "buffer does not match its shape");
    Ok(match c {
        1 => DynamicImage::ImageLuma8(GrayImage::from_raw(w, h, bytes).ok_or_else(bad)?),
        3 => DynamicImage::ImageRgb8(RgbImage::from_raw(w, h, bytes).ok_or_else(bad)?),
        c => {
            return Err(img_err(
                Path::new("<tensor>"),
                format!("{c} channels; expected 1 or 3"),
            ))
        }
    })
}

/// Write a (C, H, W) tensor, or a batch (B, C, H, W) side by side, as a PNG.
pub fn save_png(t: &Tensor, path: &Path) -> Result<()> {
    let single = match t.rank() {
        3 => t.clone(),
        4 => {
            let (b, _, _, _) = t.dims4()?;
            let cols: Vec<Tensor> = (0..b)
                .map(|i| t.get(i))
                .collect::<candle_core::Result<_>>()?;
            Tensor::cat(&cols, 2)?
        }
        r => {
            return Err(img_err(
                path,
                format!("cannot write a rank-{r} tensor as an image"),
            ))
        }
    };
    tensor_to_image(&single)?
        .save(path)
        .map_err(|e| img_err(path, format!("cannot write: {e}")))
}
