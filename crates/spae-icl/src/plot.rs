//! `spae-icl plot`: PNG figures of result files (`table1`, `depth`) and of the token pyramid
//! itself (`pyramid`). Drawn with plotters' bitmap backend; text through ab_glyph from a font
//! file found on disk (no fontconfig or freetype needed).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use plotters::coord::Shift;
use plotters::prelude::*;
use serde::Deserialize;

use crate::cli::{PlotCommand, PlotPyramidArgs};
use crate::table::GRID;

pub fn plot(command: PlotCommand) -> Result<()> {
    let written = match command {
        PlotCommand::Table1(args) => plot_table1(&args.results)?,
        PlotCommand::Depth(args) => vec![plot_depth(&args.results)?],
        PlotCommand::Pyramid(args) => vec![plot_pyramid(&args)?],
    };
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
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
                .map_err(|e| anyhow::anyhow!("laying out {text:?}: {e:?}"))?;
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

// ---------------------------------------------------------------------------------------------
// plot table1

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
struct Column {
    induction: bool,
    shots: usize,
    repeats: usize,
}

/// A column as a result file may name it: its `--columns` number, or spelled out.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ColumnRef {
    Index(usize),
    Spelled(Column),
}

#[derive(Debug, Deserialize)]
struct Table1File {
    #[serde(default)]
    task: Option<String>,
    #[serde(default)]
    llm: Option<String>,
    #[serde(default)]
    episodes: Option<usize>,
    /// Absent in files written so far: then table1.md's headers say which columns there are.
    #[serde(default)]
    columns: Option<Vec<ColumnRef>>,
    cells: Vec<Table1Cell>,
}

#[derive(Debug, Deserialize)]
struct Table1Cell {
    row: String,
    scoring: String,
    way: usize,
    /// Percent per column; `null` where the scoring has no value (NaN when written).
    accuracy: Vec<Option<f64>>,
}

fn grid_column(i: usize) -> Result<Column> {
    let (_, induction, shots, repeats) = *GRID
        .get(i)
        .with_context(|| format!("column {i}: the grid has columns 0-6"))?;
    Ok(Column {
        induction,
        shots,
        repeats,
    })
}

/// Which grid column each accuracy stands for: the file's `columns`, else all seven when every
/// cell has seven, else the header of table1.md beside it.
fn resolve_columns(file: &Table1File, dir: &Path) -> Result<Vec<Column>> {
    if let Some(cols) = &file.columns {
        return cols
            .iter()
            .map(|c| match c {
                ColumnRef::Index(i) => grid_column(*i),
                ColumnRef::Spelled(c) => Ok(*c),
            })
            .collect();
    }
    if file.cells.iter().all(|c| c.accuracy.len() == GRID.len()) {
        return (0..GRID.len()).map(grid_column).collect();
    }
    let md_path = dir.join("table1.md");
    let md = std::fs::read_to_string(&md_path).with_context(|| {
        format!(
            "{}: table1.json names no columns and its cells have fewer than 7, so the \
             table1.md beside it must say which",
            md_path.display()
        )
    })?;
    // "| 2-way | words per image | induction, 1 shot | 3 shots | avg |"
    let header = md
        .lines()
        .find(|l| l.starts_with('|') && l.contains("-way |"))
        .with_context(|| format!("{}: no table header", md_path.display()))?;
    let names: Vec<&str> = header.trim_matches('|').split('|').map(str::trim).collect();
    let inner = names.get(2..names.len().saturating_sub(1)).unwrap_or(&[]);
    inner
        .iter()
        .map(|name| {
            let i = GRID
                .iter()
                .position(|g| g.0 == *name)
                .with_context(|| format!("{}: unknown column {name:?}", md_path.display()))?;
            grid_column(i)
        })
        .collect()
}

fn scoring_name(key: &str) -> &str {
    match key {
        "open" => "open-ended",
        "constrained_decoding" => "constrained decoding",
        other => other,
    }
}

/// Writes DIR/accuracy-vs-shots.png and DIR/accuracy-vs-repeats.png (each when the table has
/// its columns) from DIR/table1.json; returns the paths written.
pub fn plot_table1(dir: &Path) -> Result<Vec<PathBuf>> {
    let json = dir.join("table1.json");
    let file: Table1File = read_json(&json)?;
    let columns = resolve_columns(&file, dir)?;
    if let Some(c) = file
        .cells
        .iter()
        .find(|c| c.accuracy.len() != columns.len())
    {
        bail!(
            "{}: cell {:?} {}-way {} has {} accuracies for {} columns",
            json.display(),
            c.row,
            c.way,
            c.scoring,
            c.accuracy.len(),
            columns.len()
        );
    }
    let rows = first_seen(file.cells.iter().map(|c| c.row.as_str()));
    let scorings = first_seen(file.cells.iter().map(|c| c.scoring.as_str()));
    let mut ways: Vec<usize> = file.cells.iter().map(|c| c.way).collect();
    ways.sort_unstable();
    ways.dedup();
    let title_tail = [
        file.task.clone(),
        file.llm.clone(),
        file.episodes.map(|e| format!("{e} episodes per cell")),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(", ");

    // (file name, x axis, x ticks, x of a column if it belongs to this plot)
    type XOf = fn(&Column) -> Option<usize>;
    let plots: [(&str, &str, Vec<i32>, XOf); 2] = [
        (
            "accuracy-vs-shots",
            "inner shots (induction, no repeats)",
            vec![1, 3, 5],
            |c| (c.induction && c.repeats == 0).then_some(c.shots),
        ),
        (
            "accuracy-vs-repeats",
            "extra copies of the support set (induction, 1 shot)",
            vec![0, 1, 3, 5],
            |c| (c.induction && c.shots == 1).then_some(c.repeats),
        ),
    ];
    let mut written = Vec::new();
    for (name, x_desc, x_ticks, x_of) in plots {
        let mut panels = Vec::new();
        let mut points = 0;
        for scoring in &scorings {
            for &way in &ways {
                let mut lines = Vec::new();
                for (series, row) in rows.iter().enumerate() {
                    let Some(cell) = file
                        .cells
                        .iter()
                        .find(|c| &c.row == row && &c.scoring == scoring && c.way == way)
                    else {
                        continue;
                    };
                    let mut pts: Vec<(i32, f64)> = columns
                        .iter()
                        .zip(&cell.accuracy)
                        .filter_map(|(col, acc)| Some((x_of(col)? as i32, (*acc)?)))
                        .filter(|(_, a)| a.is_finite())
                        .collect();
                    pts.sort_by_key(|p| p.0);
                    points += pts.len();
                    lines.push(Line {
                        series,
                        points: pts,
                    });
                }
                panels.push(Panel {
                    title: format!("{}, {way}-way", scoring_name(scoring)),
                    x_desc: x_desc.into(),
                    y_desc: "accuracy (%)".into(),
                    x_ticks: x_ticks.clone(),
                    y_range: (0.0, 100.0),
                    lines,
                    reference: (way > 0).then(|| 100.0 / way as f64),
                });
            }
        }
        if points == 0 {
            eprintln!(
                "{name}.png: {} has none of its columns; not drawn",
                json.display()
            );
            continue;
        }
        let figure = Figure {
            title: format!("Few-shot accuracy: {title_tail}"),
            legend: rows.clone(),
            reference: Some("chance (100 / way)".into()),
            columns: ways.len(),
            panels,
        };
        let path = dir.join(format!("{name}.png"));
        figure.draw(&path)?;
        written.push(path);
    }
    if written.is_empty() {
        bail!(
            "{}: no accuracy to plot: neither the shots columns (induction, 1/3/5 shots) nor \
             the repeats columns (induction, 1 shot, 0/1/3/5 repeats) have a value",
            json.display()
        );
    }
    Ok(written)
}

// ---------------------------------------------------------------------------------------------
// plot depth

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

// ---------------------------------------------------------------------------------------------
// plot pyramid

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

/// Writes the pyramid figure to `args.output`; returns its path.
pub fn plot_pyramid(args: &PlotPyramidArgs) -> Result<PathBuf> {
    if args.count == 0 || !(1..=16).contains(&args.scale) {
        bail!(
            "--count {} --scale {}: expected at least one image and a scale of 1 to 16",
            args.count,
            args.scale
        );
    }
    ensure_font()?;
    let (model, label) = crate::tokens::load_checkpoint(&args.ckpt, &Device::Cpu)?;
    let cfg = model.config().clone();
    let split = args
        .split
        .parse()
        .map_err(anyhow::Error::msg)
        .context("--split")?;
    let data = crate::train::load_data(&args.data, split, cfg.in_channels, cfg.image_size)?;
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
    for recon in &q.recon {
        columns.push(
            model
                .decode(recon)?
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

    /// Decodes `path`, checks its size and that it is not one flat colour.
    fn check_png(path: &Path, size: (u32, u32)) {
        let img = image::open(path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), size, "{}", path.display());
        let first = *img.get_pixel(0, 0);
        assert!(
            img.pixels().any(|p| *p != first),
            "{} is blank",
            path.display()
        );
    }

    #[test]
    fn plot_table1_draws_shots_and_repeats_from_the_full_grid() {
        let dir = tempfile::tempdir().unwrap();
        let cells = serde_json::json!({"task": "fashion-mnist", "llm": "local:gemma3-270m",
            "episodes": 20, "cells": [
            {"row": "SPAE, 2 layers", "scoring": "open", "way": 2,
             "accuracy": [10.0, 40.0, 55.0, 60.0, 42.0, 44.0, null], "average": 40.0},
            {"row": "random words", "scoring": "open", "way": 2,
             "accuracy": [5.0, 50.0, 48.0, 51.0, 49.0, 50.0, 52.0], "average": 40.0},
            {"row": "SPAE, 2 layers", "scoring": "open", "way": 5,
             "accuracy": [3.0, 20.0, 30.0, 33.0, 21.0, 22.0, 24.0], "average": 20.0},
            {"row": "SPAE, 2 layers", "scoring": "constrained", "way": 2,
             "accuracy": [60.0, 66.0, 70.0, 72.0, 65.0, 64.0, 63.0], "average": 60.0},
        ]});
        std::fs::write(dir.path().join("table1.json"), cells.to_string()).unwrap();
        let written = plot_table1(dir.path()).unwrap();
        assert_eq!(
            written,
            vec![
                dir.path().join("accuracy-vs-shots.png"),
                dir.path().join("accuracy-vs-repeats.png")
            ]
        );
        // 2 ways x 2 scorings; a title and one legend row (2 series and chance) above them.
        let size = (2 * PANEL_W, 2 * PANEL_H + TITLE_H + LEGEND_ROW_H + 8);
        for path in &written {
            check_png(path, size);
        }
    }

    #[test]
    fn plot_table1_reads_columns_from_table1_md_and_skips_an_empty_plot() {
        let dir = tempfile::tempdir().unwrap();
        let json = serde_json::json!({"cells": [
            {"row": "oracle words", "scoring": "open", "way": 2, "accuracy": [36.0]}]});
        std::fs::write(dir.path().join("table1.json"), json.to_string()).unwrap();
        let err = plot_table1(dir.path()).unwrap_err();
        assert!(format!("{err:#}").contains("table1.md"), "{err:#}");
        let md = "# Table 1\n\n## Open\n\n| 2-way | words per image | 5 repeats | avg |\n";
        std::fs::write(dir.path().join("table1.md"), md).unwrap();
        let written = plot_table1(dir.path()).unwrap();
        assert_eq!(written, vec![dir.path().join("accuracy-vs-repeats.png")]);
        check_png(&written[0], (PANEL_W, PANEL_H + TITLE_H + LEGEND_ROW_H + 8));

        let md = "| 2-way | words per image | no induction, 1 shot | avg |\n";
        std::fs::write(dir.path().join("table1.md"), md).unwrap();
        let err = format!("{:#}", plot_table1(dir.path()).unwrap_err());
        assert!(err.contains("no accuracy to plot"), "{err}");
    }

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

    #[test]
    fn pick_images_prefers_distinct_classes_then_split_order() {
        assert_eq!(pick_images(&[3, 3, 1, 3, 2], 3), vec![0, 2, 4]);
        assert_eq!(pick_images(&[3, 3, 1], 3), vec![0, 2, 1]);
        assert_eq!(pick_images(&[0, 1], 5), vec![0, 1]);
    }
}
