//! PNG figures of result files (`table1`, `depth`) and of the token pyramid
//! itself (`pyramid`). Drawn with plotters' bitmap backend; text through ab_glyph from a font
//! file found on disk (no fontconfig or freetype needed).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::Device;
use plotters::coord::Shift;
use plotters::prelude::*;
use serde::Deserialize;

use crate::bail;
use crate::error::{Context, EvalError, Result};
use crate::table1::GRID;

mod depth;
mod pyramid;
mod table1;

pub use depth::plot_depth;
pub use pyramid::plot_pyramid;
pub use table1::plot_table1;

pub use pyramid::PyramidPlotConfig;

impl<E: std::error::Error + Send + Sync> From<DrawingAreaErrorKind<E>> for EvalError {
    fn from(e: DrawingAreaErrorKind<E>) -> Self {
        EvalError::Invalid(format!("drawing a plot: {e}"))
    }
}

// ---------------------------------------------------------------------------------------------
// Fonts

/// Where a sans-serif font usually is: Debian/Ubuntu, Fedora, Arch, then macOS.
const FONT_PATHS: [&str; 7] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation/LiberationSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
];

/// No font could be loaded for the text of a plot.
#[derive(Debug)]
pub struct NoFont {
    /// Each place tried, with why it failed.
    pub tried: Vec<String>,
}

impl std::fmt::Display for NoFont {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no font for plot text; tried {}", self.tried.join(", "))
    }
}

impl std::error::Error for NoFont {}

/// Registers a font file as plotters' "sans-serif" once per process: $SPAE_FONT if set (and
/// nothing else then), else the first of [`FONT_PATHS`] that loads.
fn ensure_font() -> Result<()> {
    static FONT: OnceLock<std::result::Result<PathBuf, Vec<String>>> = OnceLock::new();
    let found = FONT.get_or_init(|| {
        let from_env = std::env::var_os("SPAE_FONT");
        let candidates: Vec<PathBuf> = match &from_env {
            Some(p) => vec![PathBuf::from(p)],
            None => FONT_PATHS.iter().map(PathBuf::from).collect(),
        };
        let prefix = if from_env.is_some() { "SPAE_FONT=" } else { "" };
        let mut tried = Vec::new();
        let mut candidates = candidates;
        if from_env.is_none() {
            // Last: DejaVu Sans fetched (once) into the asset cache from its Debian package.
            candidates.push(PathBuf::new());
        }
        for path in candidates {
            let path = if path.as_os_str().is_empty() {
                match spae_assets::AssetCache::from_env().fetch_named("dejavu-sans") {
                    Ok(p) => p,
                    Err(e) => {
                        tried.push(format!("the asset dejavu-sans ({e})"));
                        continue;
                    }
                }
            } else {
                path
            };
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) => {
                    tried.push(format!("{prefix}{} ({e})", path.display()));
                    continue;
                }
            };
            // plotters keeps fonts for the whole process: one small leak, once.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            match plotters::style::register_font("sans-serif", FontStyle::Normal, bytes) {
                Ok(()) => return Ok(path),
                Err(_) => tried.push(format!(
                    "{prefix}{} (not a TrueType/OpenType font)",
                    path.display()
                )),
            }
        }
        if from_env.is_none() {
            tried.push("$SPAE_FONT (unset)".into());
        }
        Err(tried)
    });
    match found {
        Ok(_) => Ok(()),
        Err(tried) => Err(NoFont {
            tried: tried.clone(),
        }
        .into()),
    }
}

fn font(size: u32) -> TextStyle<'static> {
    ("sans-serif", size).into_font().color(&BLACK)
}

// ---------------------------------------------------------------------------------------------
// Line charts

/// Tableau 10: distinct on white, and in print.
const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];
const REFERENCE: RGBColor = RGBColor(90, 90, 90);

const PANEL_W: u32 = 440;
const PANEL_H: u32 = 320;
const TITLE_H: u32 = 36;
const LEGEND_ROW_H: u32 = 22;
const LEGEND_FONT: u32 = 15;
/// The line sample before a legend entry's text.
const LEGEND_MARK_W: i32 = 36;

/// One line of a panel; `series` indexes the figure's legend (and so picks the colour).
struct Line {
    series: usize,
    points: Vec<(i32, f64)>,
}

struct Panel {
    title: String,
    x_desc: String,
    y_desc: String,
    /// The x values measured: only these are labelled.
    x_ticks: Vec<i32>,
    y_range: (f64, f64),
    lines: Vec<Line>,
    /// A dashed horizontal line (chance level).
    reference: Option<f64>,
}

/// A legend entry's series name (`None`: the reference line) and top-left corner.
type LegendEntry<'a> = (Option<&'a str>, (i32, i32));

/// A titled grid of panels (`columns` wide) under one legend: series names, then the dashed
/// reference line's name if any panel has one.
struct Figure {
    title: String,
    legend: Vec<String>,
    reference: Option<String>,
    columns: usize,
    panels: Vec<Panel>,
}

impl Figure {
    /// Width, height of the panel grid in pixels.
    fn size(&self) -> (u32, u32) {
        let cols = self.columns.max(1);
        let rows = self.panels.len().div_ceil(cols);
        (cols as u32 * PANEL_W, rows as u32 * PANEL_H)
    }

    /// The legend's entries (`None`: the reference line) and where each starts, flowed into
    /// rows of the figure's width by the measured width of its text.
    fn legend_layout(&self) -> Result<Vec<LegendEntry<'_>>> {
        let width = self.size().0 as i32;
        let entries = self
            .legend
            .iter()
            .map(|s| Some(s.as_str()))
            .chain(self.reference.iter().map(|_| None));
        let (mut x, mut y) = (12, TITLE_H as i32 + 8);
        let mut out = Vec::new();
        for entry in entries {
            let text = entry.or(self.reference.as_deref()).unwrap_or_default();
            let (text_w, _) = font(LEGEND_FONT)
                .font
                .box_size(text)
                .map_err(|e| EvalError::msg(format!("laying out {text:?}: {e:?}")))?;
            let entry_w = LEGEND_MARK_W + text_w as i32 + 24;
            if x > 12 && x + entry_w > width {
                (x, y) = (12, y + LEGEND_ROW_H as i32);
            }
            out.push((entry, (x, y)));
            x += entry_w;
        }
        Ok(out)
    }

    fn draw(&self, path: &Path) -> Result<()> {
        ensure_font()?;
        let legend = self.legend_layout()?;
        let legend_bottom = legend.last().map_or(TITLE_H as i32, |(_, (_, y))| y + 14);
        let header_h = legend_bottom as u32 + 8;
        let (w, panels_h) = self.size();
        let h = header_h + panels_h;
        let mut buf = vec![255u8; (w * h * 3) as usize];
        {
            let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
            let (header, body) = root.split_vertically(header_h);
            header.draw(&Text::new(self.title.clone(), (12, 8), font(20)))?;
            for (i, (entry, (x, y))) in legend.iter().enumerate() {
                let (x, y) = (*x, *y);
                match entry {
                    Some(name) => {
                        let color = COLORS[i % COLORS.len()];
                        let segment = vec![(x, y), (x + 28, y)];
                        header.draw(&PathElement::new(segment, color.stroke_width(3)))?;
                        header.draw(&Circle::new((x + 14, y), 4, color.filled()))?;
                        header.draw(&Text::new(
                            *name,
                            (x + LEGEND_MARK_W, y - 8),
                            font(LEGEND_FONT),
                        ))?;
                    }
                    None => {
                        let style = REFERENCE.stroke_width(2);
                        for d in (0..28).step_by(8) {
                            let dash = vec![(x + d, y), (x + d + 5, y)];
                            header.draw(&PathElement::new(dash, style))?;
                        }
                        let name = self.reference.as_deref().unwrap_or_default();
                        header.draw(&Text::new(
                            name,
                            (x + LEGEND_MARK_W, y - 8),
                            font(LEGEND_FONT),
                        ))?;
                    }
                }
            }
            let cols = self.columns.max(1);
            let rows = self.panels.len().div_ceil(cols);
            for (panel, area) in self.panels.iter().zip(body.split_evenly((rows, cols))) {
                draw_panel(panel, &area)?;
            }
            root.present()?;
        }
        save_rgb(path, buf, w, h)
    }
}

fn draw_panel(panel: &Panel, area: &DrawingArea<BitMapBackend, Shift>) -> Result<()> {
    let lo = panel.x_ticks.first().copied().unwrap_or(0) - 1;
    let hi = panel.x_ticks.last().copied().unwrap_or(0) + 1;
    let (y_lo, y_hi) = panel.y_range;
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, font(16))
        .margin(10)
        .x_label_area_size(38)
        .y_label_area_size(52)
        .build_cartesian_2d(lo..hi, y_lo..y_hi)?;
    chart
        .configure_mesh()
        .x_desc(&panel.x_desc)
        .y_desc(&panel.y_desc)
        .x_labels((hi - lo + 1) as usize)
        .x_label_formatter(&|x| {
            if panel.x_ticks.contains(x) {
                x.to_string()
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style(font(13))
        .axis_desc_style(font(14))
        .disable_x_mesh()
        .bold_line_style(BLACK.mix(0.12))
        .light_line_style(TRANSPARENT)
        .draw()?;
    if let Some(r) = panel.reference {
        chart.draw_series(DashedLineSeries::new(
            [(lo, r), (hi, r)],
            6,
            5,
            REFERENCE.stroke_width(2),
        ))?;
    }
    for line in &panel.lines {
        let color = COLORS[line.series % COLORS.len()];
        // Markers too: a series of one point draws no line.
        chart.draw_series(
            LineSeries::new(line.points.iter().copied(), color.filled().stroke_width(2))
                .point_size(4),
        )?;
    }
    Ok(())
}

/// Writes an RGB buffer as PNG, compressed hard: these files are committed beside results.
fn save_rgb(path: &Path, buf: Vec<u8>, w: u32, h: u32) -> Result<()> {
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    use image::ImageEncoder;
    let write = || -> Result<()> {
        let file = std::io::BufWriter::new(std::fs::File::create(path)?);
        PngEncoder::new_with_quality(file, CompressionType::Best, FilterType::Adaptive)
            .write_image(&buf, w, h, image::ExtendedColorType::Rgb8)?;
        Ok(())
    };
    write().with_context(|| format!("writing {}", path.display()))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}", path.display()))
}

/// Items in order of first appearance.
fn first_seen<'a>(items: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for it in items {
        if !out.iter().any(|o| o == it) {
            out.push(it.to_string());
        }
    }
    out
}

/// Decodes `path`, checks its size and that it is not one flat colour.
#[cfg(test)]
pub(crate) fn check_png(path: &Path, size: (u32, u32)) {
    let img = image::open(path).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), size, "{}", path.display());
    let first = *img.get_pixel(0, 0);
    assert!(
        img.pixels().any(|p| *p != first),
        "{} is blank",
        path.display()
    );
}
