//! The evaluation commands end to end on the bundled sample: `table-tokenizer`, `ablations`
//! and `image-to-image` write their tables, and a rerun is served from their files.

use std::path::{Path, PathBuf};

mod common;

use common::{bin, ok, small_checkpoint};

fn sample_folder() -> String {
    format!(
        "folder:{}",
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../datasets/samples/fashion-mnist-test-60")
            .display()
    )
}

fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn table_tokenizer_rows_per_checkpoint_and_set_and_a_cached_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = small_checkpoint(dir.path());
    let out = dir.path().join("tok");
    let run = || {
        let mut c = bin();
        c.args(["table-tokenizer", "--checkpoint", "builtin", "--checkpoint"])
            .arg(format!("small={}", ckpt.display()))
            .args([
                "--data",
                &sample_folder(),
                "--limit",
                "12",
                "--scorer",
                "none",
            ])
            .arg("--out")
            .arg(&out)
            .env("SPAE_LOG", "info");
        ok(&mut c)
    };
    run();
    let doc = read_json(&out.join("table-tokenizer.json"));
    let rows = doc["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["checkpoint"], "built-in");
    assert_eq!(rows[1]["checkpoint"], "small");
    for r in rows {
        let depths = r["depths"].as_array().unwrap();
        assert_eq!(depths.len(), 5, "{r}");
        assert_eq!(r["images"], 12);
        let psnr: Vec<f64> = depths.iter().map(|d| d["psnr"].as_f64().unwrap()).collect();
        assert!(psnr.iter().all(|p| p.is_finite() && *p > 0.0), "{psnr:?}");
    }
    // The built-in checkpoint is trained: its full-depth PSNR beats the random one's.
    let full = |r: &serde_json::Value| r["depths"][4]["psnr"].as_f64().unwrap();
    assert!(full(&rows[0]) > full(&rows[1]) + 3.0, "{doc}");
    let md = std::fs::read_to_string(out.join("table-tokenizer.md")).unwrap();
    assert!(
        md.contains("## built-in on folder:") && md.contains("## small on folder:"),
        "{md}"
    );

    let again = run();
    let log = String::from_utf8_lossy(&again.stderr);
    assert_eq!(log.matches(": from ").count(), 2, "{log}");
    assert_eq!(
        std::fs::read_to_string(out.join("table-tokenizer.md")).unwrap(),
        md
    );
}

#[test]
fn ablations_train_each_variant_on_one_budget_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("abl");
    let run = || {
        let mut c = bin();
        c.args([
            "ablations",
            "--variants",
            "spae,no-semantic,flat",
            "--steps",
            "2",
        ])
        .args(["--batch-size", "4", "--limit", "8", "--episodes", "1"])
        .args([
            "--train-data",
            &sample_folder(),
            "--eval-data",
            &sample_folder(),
        ])
        .args(["--task", "sample", "--no-cache"])
        .arg("--out")
        .arg(&out);
        ok(&mut c)
    };
    run();
    let doc = read_json(&out.join("ablations.json"));
    let rows = doc["rows"].as_array().unwrap();
    let names: Vec<&str> = rows
        .iter()
        .map(|r| r["variant"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["spae", "no-semantic", "flat"]);
    let words: Vec<u64> = rows
        .iter()
        .map(|r| r["words_per_image"].as_u64().unwrap())
        .collect();
    assert_eq!(words, [5, 5, 64]);
    for r in rows {
        // 2- and 5-way, open and constrained.
        assert_eq!(r["accuracy"].as_array().unwrap().len(), 4, "{r}");
    }
    for v in ["spae", "no-semantic", "flat"] {
        let state = read_json(&out.join(v).join("train/train.json"));
        assert_eq!(state["step"], 2, "{v}");
    }
    let flat = read_json(&out.join("flat/train/train.json"));
    assert_eq!(flat["config"]["semantic"]["layers"], 1);
    let none = read_json(&out.join("no-semantic/train/train.json"));
    assert!(none["config"]["semantic"].is_null(), "{none}");
    let md = std::fs::read_to_string(out.join("ablations.md")).unwrap();
    // Result folders keep the small files only: without the checkpoints, a rerun with the
    // same settings is served from each variant's row.json (nothing is trained again).
    for v in ["spae", "no-semantic", "flat"] {
        std::fs::remove_file(out.join(v).join("train/checkpoint.safetensors")).unwrap();
    }
    let again = run();
    assert!(!out.join("spae/train/checkpoint.safetensors").exists());
    assert_eq!(
        std::fs::read_to_string(out.join("ablations.md")).unwrap(),
        md
    );
    let log = String::from_utf8_lossy(&again.stderr);
    assert!(!log.contains("wrote "), "{log}");

    // Another budget in the same place is refused, not mixed in.
    let refused = bin()
        .args([
            "ablations",
            "--variants",
            "spae",
            "--steps",
            "3",
            "--no-cache",
        ])
        .args(["--train-data", &sample_folder(), "--task", "sample"])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("--steps 2") && err.contains("3"), "{err}");
}

#[test]
fn image_to_image_reports_psnr_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt: PathBuf = small_checkpoint(dir.path());
    let out = dir.path().join("denoise");
    let run = |count: &str, pairs: &str| {
        let mut c = bin();
        c.args([
            "image-to-image",
            "--task",
            "inpaint",
            "--count",
            count,
            "--pairs",
            pairs,
        ])
        .args(["--layers", "2", "--llm", "local:smollm2-135m", "--no-cache"])
        .args(["--data", &sample_folder()])
        .arg("--checkpoint")
        .arg(&ckpt)
        .arg("--out")
        .arg(&out);
        c.output().unwrap()
    };
    let first = run("2", "3");
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let lines = |p: &Path| {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    let results = out.join("results.jsonl");
    let two = lines(&results);
    assert_eq!(two.len(), 2);
    let summary = read_json(&out.join("summary.json"));
    assert_eq!(summary["images"], 2);
    for k in [
        "psnr_corrupted",
        "psnr_copy",
        "psnr_llm",
        "psnr_clean_words",
    ] {
        assert!(summary[k].as_f64().unwrap().is_finite(), "{k}: {summary}");
    }
    let item: serde_json::Value = serde_json::from_str(&two[0]).unwrap();
    let sizes: Vec<usize> = item["words"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, [1, 4]);
    let png = image::open(out.join("examples.png")).unwrap();
    assert_eq!((png.width(), png.height()), (4 * 28, 2 * 28));

    // More images: the first two are kept as they were, one is added.
    assert!(run("3", "3").status.success());
    let three = lines(&results);
    assert_eq!(&three[..2], &two[..]);
    assert_eq!(three.len(), 3);
    // Other settings in the same directory are refused.
    let other = run("3", "4");
    assert_eq!(other.status.code(), Some(2));
    let err = String::from_utf8_lossy(&other.stderr);
    assert!(
        err.contains("other settings") && err.contains("pairs"),
        "{err}"
    );
}
