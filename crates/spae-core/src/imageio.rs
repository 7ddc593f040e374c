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

/// The colour transparent pixels are composited over: white, a drawing's paper (the `emoji`
/// data set's background too).
pub const BACKGROUND: [u8; 3] = [255, 255, 255];

/// `img` with its transparent pixels composited over [`BACKGROUND`] (RGB, rounded to the
/// nearest byte); an image without alpha as it is. Dropping alpha instead would show an icon
/// on whatever its transparent pixels store, often black.
pub fn composite_over_background(img: &DynamicImage) -> DynamicImage {
    if !img.color().has_alpha() {
        return img.clone();
    }
    let rgba = img.to_rgba8();
    let mut rgb = RgbImage::new(rgba.width(), rgba.height());
    for (out, px) in rgb.pixels_mut().zip(rgba.pixels()) {
        let a = px.0[3] as u32;
        for ((o, &fg), &bg) in out.0.iter_mut().zip(&px.0).zip(&BACKGROUND) {
            *o = ((fg as u32 * a + bg as u32 * (255 - a) + 127) / 255) as u8;
        }
    }
    DynamicImage::ImageRgb8(rgb)
}

/// Read an image file as a (C, size, size) tensor in [0, 1]: transparent pixels composited
/// over [`BACKGROUND`], converted to gray (C = 1) or RGB (C = 3), its shorter side resized to
/// `size` and the centre cropped.
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
    let img = composite_over_background(img);
    let img = if w as usize == size && h as usize == size {
        img
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1x1 image read with `channels`, as bytes: the tensor holds byte * (1/255), within an
    /// ulp of byte / 255, so rounding x * 255 gives the byte back.
    fn read_bytes(img: DynamicImage, channels: usize) -> Vec<u8> {
        image_to_tensor(&img, channels, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|v| (v * 255.0).round() as u8)
            .collect()
    }

    /// A transparent pixel reads as the background whatever colour it stores, in gray and in
    /// RGB, and half alpha blends halfway; an opaque image reads as it is.
    #[test]
    fn transparent_pixels_read_as_the_background() {
        // Gray: black stored under alpha 0 -> white; opaque black stays black.
        for (pixel, want) in [([0u8, 0], 255u8), ([0, 255], 0)] {
            let img = image::GrayAlphaImage::from_raw(1, 1, pixel.to_vec()).unwrap();
            assert_eq!(
                read_bytes(DynamicImage::ImageLumaA8(img), 1),
                [want],
                "{pixel:?}"
            );
        }
        // Red at alpha 128 over white: (255*128 + 255*127 + 127) / 255 = 255 for red,
        // (0*128 + 255*127 + 127) / 255 = 127 for green and blue.
        let img = image::RgbaImage::from_raw(1, 1, vec![255, 0, 0, 128]).unwrap();
        assert_eq!(
            read_bytes(DynamicImage::ImageRgba8(img), 3),
            [255, 127, 127]
        );
        let clear = image::RgbaImage::from_raw(1, 1, vec![0, 0, 0, 0]).unwrap();
        assert_eq!(read_bytes(DynamicImage::ImageRgba8(clear), 1), [255]);
        let opaque = DynamicImage::ImageRgb8(RgbImage::from_raw(1, 1, vec![10, 20, 30]).unwrap());
        assert_eq!(composite_over_background(&opaque), opaque);
    }
}
