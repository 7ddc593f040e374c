//! `spae-icl plot table1`: accuracy against shots and against repeats from a table1.json.

use super::*;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::check_png;

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
}
