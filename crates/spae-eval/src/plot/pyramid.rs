//! `spae-icl plot pyramid`: images, their first-layer word and their reconstruction at each depth.

use super::*;

const GAP: u32 = 10;
const WORD_W: u32 = 170;
const CELL_LABEL_H: u32 = 34;
const PYRAMID_TITLE_H: u32 = 34;

/// Width and height of the pyramid figure: a word column, then `depth + 1` image columns.
fn pyramid_size(rows: usize, depth: usize, cell: u32) -> (u32, u32) {
    (
        GAP + WORD_W + (depth as u32 + 1) * (cell + GAP),
        PYRAMID_TITLE_H + rows as u32 * (CELL_LABEL_H + cell + GAP),
    )
}

/// `count` images of `labels`, of distinct classes while there are classes left, in split order.
fn pick_images(labels: &[u32], count: usize) -> Vec<usize> {
    let mut picked: Vec<usize> = Vec::new();
    for (i, l) in labels.iter().enumerate() {
        if picked.len() < count && !picked.iter().any(|&p| labels[p] == *l) {
            picked.push(i);
        }
    }
    let rest: Vec<usize> = (0..labels.len()).filter(|i| !picked.contains(i)).collect();
    picked.extend(rest.into_iter().take(count.saturating_sub(picked.len())));
    picked
}

/// Images beside their reconstructions at every pyramid depth.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PyramidPlotConfig {
    pub checkpoint: crate::tokenizer::CheckpointRef,
    /// A data spec (`mnist`, `fashion-mnist`, `folder:DIR`, ...).
    pub data: String,
    pub split: String,
    /// Images (rows): the first of each class in split order, then the next ones.
    pub count: usize,
    /// Pixels per image pixel (nearest-neighbour upscaling).
    pub scale: u32,
    /// PNG to write.
    pub output: PathBuf,
}

/// Writes the pyramid figure to `args.output`; returns its path.
pub fn plot_pyramid(args: &PyramidPlotConfig) -> Result<PathBuf> {
    if args.count == 0 || !(1..=16).contains(&args.scale) {
        bail!(
            "--count {} --scale {}: expected at least one image and a scale of 1 to 16",
            args.count,
            args.scale
        );
    }
    ensure_font()?;
    let (model, label) = args.checkpoint.load(&Device::Cpu)?;
    let cfg = model.config().clone();
    let data = crate::tokenizer_eval::data_for(&model, &args.data, &args.split)?;
    let idx = pick_images(&data.labels, args.count);
    if idx.is_empty() {
        bail!(
            "--data {}: no images in the {} split",
            args.data,
            args.split
        );
    }
    let depth = cfg.pyramid.depth();
    let x = data.batch(&idx, model.device())?;
    let q = model.quantize(&x, depth)?;
    // columns[0]: the originals; columns[l]: decoded from the first l layers. Each (B*C*S*S).
    let mut columns: Vec<Vec<f32>> = vec![x.flatten_all()?.to_vec1()?];
    for l in 1..=q.recon.len() {
        columns.push(
            model
                .decode(&model.decoder_input(&q, l, None)?)?
                .clamp(0f32, 1f32)?
                .flatten_all()?
                .to_vec1()?,
        );
    }
    let first_words: Vec<Vec<u32>> = q.indices[0].flatten_from(1)?.to_vec2()?;

    let (c, s) = (cfg.in_channels, cfg.image_size);
    let cell = s as u32 * args.scale;
    let (w, h) = pyramid_size(idx.len(), depth, cell);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    let origin = |row: usize, col: usize| {
        (
            GAP + WORD_W + col as u32 * (cell + GAP),
            PYRAMID_TITLE_H + row as u32 * (CELL_LABEL_H + cell + GAP) + CELL_LABEL_H,
        )
    };
    // Pixels first, upscaled nearest-neighbour; text over them afterwards.
    for (col, pixels) in columns.iter().enumerate() {
        for row in 0..idx.len() {
            let image = &pixels[row * c * s * s..(row + 1) * c * s * s];
            let (x0, y0) = origin(row, col);
            for py in 0..cell {
                for px in 0..cell {
                    let (sy, sx) = ((py / args.scale) as usize, (px / args.scale) as usize);
                    let at = ((y0 + py) * w + x0 + px) as usize * 3;
                    for k in 0..3 {
                        // A gray image repeats its one channel.
                        let v = image[(k % c) * s * s + sy * s + sx];
                        buf[at + k] = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
                    }
                }
            }
        }
    }
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        let title = format!("SPAE pyramid: {label} on {} {}", args.data, args.split);
        root.draw(&Text::new(title, (GAP as i32, 8), font(18)))?;
        let gray = font(13).color(&REFERENCE);
        for (row, &i) in idx.iter().enumerate() {
            for col in 0..=depth {
                let (x0, y0) = origin(row, col);
                let (x0, y0) = (x0 as i32, y0 as i32 - CELL_LABEL_H as i32);
                let (top, bottom) = match col {
                    0 => ("original".to_string(), format!("{s}x{s}")),
                    d => {
                        let n = cfg.pyramid.tokens_up_to(d);
                        let words = if n == 1 { "word" } else { "words" };
                        (format!("depth {d}"), format!("{n} {words}"))
                    }
                };
                root.draw(&Text::new(top, (x0, y0 + 2), font(13)))?;
                root.draw(&Text::new(bottom, (x0, y0 + 17), gray.clone()))?;
            }
            let (_, y0) = origin(row, 0);
            let words: Vec<&str> = first_words[row]
                .iter()
                .map(|&e| model.codebook().word(e as usize))
                .collect();
            let class = data.class_names.get(data.labels[i] as usize);
            let y = y0 as i32 + cell as i32 / 2 - 20;
            root.draw(&Text::new(words.join(" "), (GAP as i32, y), font(22)))?;
            root.draw(&Text::new(
                "first-layer word",
                (GAP as i32, y + 28),
                gray.clone(),
            ))?;
            if let Some(class) = class {
                let text = format!("class: {class}");
                root.draw(&Text::new(text, (GAP as i32, y + 44), gray.clone()))?;
            }
        }
        root.present()?;
    }
    if let Some(parent) = args.output.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("{}", parent.display()))?;
    }
    save_rgb(&args.output, buf, w, h)?;
    Ok(args.output.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pick_images_prefers_distinct_classes_then_split_order() {
        assert_eq!(pick_images(&[3, 3, 1, 3, 2], 3), vec![0, 2, 4]);
        assert_eq!(pick_images(&[3, 3, 1], 3), vec![0, 2, 1]);
        assert_eq!(pick_images(&[0, 1], 5), vec![0, 1]);
    }
}
