//! `spae-icl plot depth`: PSNR and relevance against pyramid depth from a table-tokenizer.json.

use super::*;

#[derive(Debug, Deserialize)]
struct TokenizerTable {
    rows: Vec<TokenizerRow>,
}

#[derive(Debug, Deserialize)]
struct TokenizerRow {
    checkpoint: String,
    data: String,
    depths: Vec<DepthPoint>,
}

/// The fields of `evaluate::DepthRow` drawn here; the others are ignored.
#[derive(Debug, Deserialize)]
struct DepthPoint {
    depth: usize,
    psnr: f64,
    class_top_k_hit_rate: f64,
    #[serde(default)]
    top_k: Option<usize>,
}

/// Writes DIR/psnr-vs-depth.png from DIR/table-tokenizer.json; returns its path.
pub fn plot_depth(dir: &Path) -> Result<PathBuf> {
    let json = dir.join("table-tokenizer.json");
    let table: TokenizerTable = read_json(&json)?;
    let points = || table.rows.iter().flat_map(|r| &r.depths);
    let max_depth = points().map(|d| d.depth).max().with_context(|| {
        format!(
            "{}: no depths to plot (rows: {})",
            json.display(),
            table.rows.len()
        )
    })?;
    let psnrs = || points().map(|d| d.psnr).filter(|p| p.is_finite());
    let lo = psnrs().fold(f64::INFINITY, f64::min);
    let hi = psnrs().fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if lo <= hi { (lo, hi) } else { (0.0, 1.0) };
    let pad = ((hi - lo) * 0.1).max(1.0);
    let top_k = points().find_map(|d| d.top_k);
    let x_ticks: Vec<i32> = (1..=max_depth as i32).collect();
    let lines = |value: fn(&DepthPoint) -> f64| -> Vec<Line> {
        table
            .rows
            .iter()
            .enumerate()
            .map(|(series, r)| {
                let mut points: Vec<(i32, f64)> = r
                    .depths
                    .iter()
                    .map(|d| (d.depth as i32, value(d)))
                    .collect();
                points.sort_by_key(|p| p.0);
                Line { series, points }
            })
            .collect()
    };
    let figure = Figure {
        title: "Tokenizer quality per pyramid depth".into(),
        legend: table
            .rows
            .iter()
            .map(|r| format!("{} on {}", short_label(&r.checkpoint), r.data))
            .collect(),
        reference: None,
        columns: 2,
        panels: vec![
            Panel {
                title: "reconstruction".into(),
                x_desc: "pyramid depth (layers decoded)".into(),
                y_desc: "PSNR (dB)".into(),
                x_ticks: x_ticks.clone(),
                y_range: ((lo - pad).max(0.0), hi + pad),
                lines: lines(|d| d.psnr),
                reference: None,
            },
            Panel {
                title: match top_k {
                    Some(k) => format!("words among their class's top {k}"),
                    None => "words among their class's top k".into(),
                },
                x_desc: "pyramid depth (layer)".into(),
                y_desc: "class top-k hit rate (%)".into(),
                x_ticks,
                y_range: (0.0, 100.0),
                lines: lines(|d| 100.0 * d.class_top_k_hit_rate),
                reference: None,
            },
        ],
    };
    let path = dir.join("psnr-vs-depth.png");
    figure.draw(&path)?;
    Ok(path)
}

/// A checkpoint path's file name, so a legend entry fits.
fn short_label(checkpoint: &str) -> &str {
    if checkpoint.starts_with('<') {
        return checkpoint;
    }
    Path::new(checkpoint)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(checkpoint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::check_png;

    #[test]
    fn plot_depth_draws_psnr_and_hit_rate_per_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let depth = |d: usize, psnr: f64, hit: f64| {
            serde_json::json!({"depth": d, "tokens": d * d, "psnr": psnr, "ssim": 0.3,
                "mean_relevance": 0.2, "class_top_k_hit_rate": hit, "top_k": 50,
                "distinct_entries": 40, "top_word": "seven"})
        };
        let table = serde_json::json!({"rows": [
            {"checkpoint": "<built-in>", "data": "mnist",
             "depths": [depth(1, 12.5, 0.78), depth(2, 14.0, 0.5), depth(3, 17.8, 0.2)]},
            {"checkpoint": "runs/x/checkpoint.safetensors", "data": "fashion-mnist",
             "depths": [depth(1, 11.0, 0.6), depth(2, 13.0, 0.4)]},
        ]});
        std::fs::write(dir.path().join("table-tokenizer.json"), table.to_string()).unwrap();
        let path = plot_depth(dir.path()).unwrap();
        assert_eq!(path, dir.path().join("psnr-vs-depth.png"));
        check_png(&path, (2 * PANEL_W, PANEL_H + TITLE_H + LEGEND_ROW_H + 8));

        std::fs::write(dir.path().join("table-tokenizer.json"), r#"{"rows": []}"#).unwrap();
        let err = format!("{:#}", plot_depth(dir.path()).unwrap_err());
        assert!(err.contains("no depths to plot"), "{err}");
    }
}
