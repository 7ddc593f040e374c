//! Tasks are data: a user's own TOML file runs without writing Rust, the built-in ones are
//! listed, and the binary needs nothing from the source tree at run time.

use std::path::Path;

mod common;

use common::{bin, ok, small_checkpoint};

/// A folder of two classes of distinct gray patterns, in the image-folder layout.
fn write_folder(root: &Path) {
    for (k, class) in ["stripes", "dots"].iter().enumerate() {
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).unwrap();
        for j in 0..3u32 {
            let img = image::GrayImage::from_fn(28, 28, |x, y| {
                let v = if k == 0 { (x + j) % 4 } else { (x * y + j) % 5 };
                image::Luma([(v * 60) as u8])
            });
            img.save(dir.join(format!("{j}.png"))).unwrap();
        }
    }
}

#[test]
fn a_user_written_task_file_runs_with_its_own_names_and_defaults() {
    let dir = tempfile::tempdir().unwrap();
    write_folder(&dir.path().join("patterns"));
    let ckpt = small_checkpoint(dir.path());
    // A path relative to the task file, class names replacing the folder names, and
    // defaults that differ from the built-in tasks'.
    let task = dir.path().join("my-task.toml");
    std::fs::write(
        &task,
        r#"
name = "patterns"
description = "stripes against dots"
data = "folder:patterns"
class_names = ["polka", "zebra"]
scorings = ["constrained"]

[defaults]
way = 2
shots = 2
layers = 1
episodes = 3
induction = false
"#,
    )
    .unwrap();
    let out = dir.path().join("out");
    ok(bin()
        .args(["-q", "run", "--task"])
        .arg(&task)
        .args([
            "--llm",
            "local:smollm2-135m",
            "--text-prompts",
            "--no-cache",
        ])
        .arg("--checkpoint")
        .arg(&ckpt)
        .arg("--out")
        .arg(&out));
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    let id = &run["identity"];
    assert_eq!(id["task"], "patterns");
    assert_eq!(
        (id["shots"].as_u64(), id["layers"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(id["induction"], false);
    let results = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
    let rows: Vec<serde_json::Value> = results
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3, "{results}");
    for r in &rows {
        let mut classes: Vec<&str> = r["classes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        classes.sort();
        assert_eq!(classes, ["polka", "zebra"], "{r}");
        assert!(r["scorings"]["constrained"].is_object(), "{r}");
        assert!(r["scorings"].get("open").is_none(), "{r}");
    }
    let prompt = std::fs::read_to_string(out.join("prompt-episode-0.txt")).unwrap();
    assert!(!prompt.contains("Answer with"), "no induction: {prompt}");

    // A typo in the file is an error that names the file and the key.
    std::fs::write(
        &task,
        "name = \"x\"\ndata = \"folder:patterns\"\nscoring = [\"open\"]\n",
    )
    .unwrap();
    let bad = bin().args(["run", "--task"]).arg(&task).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("my-task.toml") && err.contains("scoring"),
        "{err}"
    );
}

#[test]
fn tasks_lists_the_builtin_ones() {
    let out = ok(bin().arg("tasks"));
    let text = String::from_utf8_lossy(&out.stdout);
    for name in [
        "sample",
        "fashion-mnist",
        "mnist",
        "mini-imagenet",
        "folder",
        "frozen",
        "easy-vqa-vqa",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "{name} in\n{text}"
        );
    }
}

/// What `cargo install` gives: the binary alone, run from a folder outside the checkout. The
/// bundled sample and the task files are built in; results go under ./runs there.
#[test]
fn the_binary_runs_its_main_job_from_any_directory() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("spae-icl");
    std::fs::copy(env!("CARGO_BIN_EXE_spae-icl"), &exe).unwrap();
    let work = dir.path().join("elsewhere");
    std::fs::create_dir_all(&work).unwrap();
    let out = std::process::Command::new(&exe)
        .current_dir(&work)
        .args([
            "-q",
            "run",
            "--episodes",
            "2",
            "--llm",
            "local:smollm2-135m",
            "--text-prompts",
        ])
        .args(["--scoring", "constrained", "--no-cache"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runs = work.join("runs/sample");
    let folders: Vec<_> = std::fs::read_dir(&runs).unwrap().collect();
    assert_eq!(
        folders.len(),
        1,
        "one result folder under {}",
        runs.display()
    );
}
