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

/// The lines of a text file the command wrote.
fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
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
        // The built-in's phase 2 added two full-resolution layers to the pyramid.
        let layers = if r["checkpoint"] == "built-in" { 7 } else { 5 };
        assert_eq!(depths.len(), layers, "{r}");
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

/// A 32x32 RGB checkpoint on SmolLM2's vocabulary, untrained (the pipeline, not the accuracy);
/// easy-VQA's 64x64 images are resized to it.
fn rgb32_checkpoint(dir: &Path) -> PathBuf {
    common::init_checkpoint(dir, "rgb32", &["--image-size", "32", "--channels", "3"])
}

#[test]
fn eval_vqa_scores_answers_beside_baselines_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = rgb32_checkpoint(dir.path());
    let out = dir.path().join("vqa");
    let run = |task: &str, limit: &str, shots: &str| {
        let mut c = bin();
        c.args([
            "eval-vqa", "--task", task, "--limit", limit, "--shots", shots,
        ])
        .args(["--llm", "local:smollm2-135m", "--no-cache", "--checkpoint"])
        .arg(&ckpt)
        .arg("--out")
        .arg(out.join(task));
        c.output().unwrap()
    };
    let first = run("vqa", "3", "2");
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let results = out.join("vqa/results.jsonl");
    let three = lines(&results);
    assert_eq!(three.len(), 3);
    let answers = [
        "circle",
        "rectangle",
        "triangle",
        "yes",
        "no",
        "red",
        "green",
        "blue",
        "black",
        "gray",
        "teal",
        "brown",
        "yellow",
    ];
    for l in &three {
        let r: serde_json::Value = serde_json::from_str(l).unwrap();
        let c = r["constrained"].as_str().unwrap();
        assert!(answers.contains(&c), "{r}");
        assert_eq!(
            r["constrained_correct"].as_bool().unwrap(),
            c == r["truth"].as_str().unwrap()
        );
        // The blind baseline answers each question with its most frequent training answer.
        assert!(answers.contains(&r["blind"].as_str().unwrap()), "{r}");
    }
    let summary = read_json(&out.join("vqa/summary.json"));
    assert_eq!(summary["kinds"][0]["kind"], "all");
    assert_eq!(summary["kinds"][0]["items"], 3);
    let md = std::fs::read_to_string(out.join("vqa/summary.md")).unwrap();
    assert!(
        md.contains("| all | 3 |") && md.contains("majority"),
        "{md}"
    );

    // More items: the first three are kept, one is added; other settings are refused.
    assert!(run("vqa", "4", "2").status.success());
    let four = lines(&results);
    assert_eq!(&four[..3], &three[..]);
    assert_eq!(four.len(), 4);
    let other = run("vqa", "4", "3");
    assert_eq!(other.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&other.stderr).contains("shots"));

    // Captioning: one of the 24 captions when constrained.
    let cap = run("caption", "2", "2");
    assert!(
        cap.status.success(),
        "{}",
        String::from_utf8_lossy(&cap.stderr)
    );
    for l in lines(&out.join("caption/results.jsonl")) {
        let r: serde_json::Value = serde_json::from_str(&l).unwrap();
        let c = r["constrained"].as_str().unwrap();
        assert!(c.starts_with("a ") && c.split(' ').count() == 3, "{r}");
        assert_eq!(r["kind"], "caption");
    }
    let parts = read_json(&out.join("caption/summary.json"))["caption_parts"].clone();
    assert_eq!(parts.as_array().map(Vec::len), Some(3), "{parts}");

    // A gray tokenizer cannot read easy-VQA's colours: a clear error naming the checkpoint.
    let small = small_checkpoint(dir.path());
    let wrong = bin()
        .args([
            "vqa",
            "--question",
            "what color is the shape?",
            "--llm",
            "local:smollm2-135m",
        ])
        .arg(common::sample("mnist-seven.png"))
        .arg("--checkpoint")
        .arg(&small)
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        err.contains("small.safetensors") && err.contains("RGB"),
        "{err}"
    );
}

#[test]
fn vqa_and_caption_answer_one_image() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = rgb32_checkpoint(dir.path());
    let img = common::sample("mnist-seven.png");
    let vqa = ok(bin()
        .args([
            "vqa",
            "--question",
            "What color is the shape?",
            "--shots",
            "3",
        ])
        .args(["--llm", "local:smollm2-135m", "--no-cache", "--checkpoint"])
        .arg(&ckpt)
        .arg(&img));
    let vqa = String::from_utf8_lossy(&vqa.stdout);
    let answer = vqa.trim();
    let colours = [
        "red", "green", "blue", "black", "gray", "teal", "brown", "yellow",
    ];
    // Constrained to easy-VQA's answers; three colour questions in context.
    assert!(
        [
            &colours[..],
            &["circle", "rectangle", "triangle", "yes", "no"]
        ]
        .concat()
        .contains(&answer),
        "{answer}"
    );
    let cap = ok(bin()
        .args([
            "caption",
            "--shots",
            "3",
            "--llm",
            "local:smollm2-135m",
            "--no-cache",
        ])
        .arg("--checkpoint")
        .arg(&ckpt)
        .arg(&img)
        .arg(&img));
    let cap = String::from_utf8_lossy(&cap.stdout);
    assert_eq!(cap.lines().count(), 2, "{cap}");
    assert!(
        cap.lines()
            .all(|l| l.starts_with(&*img.display().to_string())),
        "{cap}"
    );
}

#[test]
fn emoji_captioning_reads_each_word_source_and_calibrates() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = rgb32_checkpoint(dir.path());
    let run = |words: &[&str], out: &str| {
        let mut c = bin();
        c.args([
            "eval-vqa",
            "--task",
            "emoji-caption",
            "--limit",
            "2",
            "--shots",
            "2",
        ])
        .args(["--llm", "local:smollm2-135m", "--no-cache", "--checkpoint"])
        .arg(&ckpt)
        .args(words)
        .arg("--out")
        .arg(dir.path().join(out));
        c.output().unwrap()
    };
    let teacher = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../checkpoints/scorer-minilm-emoji.safetensors")
        .display()
        .to_string();
    for (words, out) in [
        (vec![], "spae"),
        (vec!["--words", "random"], "random"),
        (vec!["--words", "oracle"], "oracle"),
        (
            vec!["--words", "teacher", "--teacher", teacher.as_str()],
            "teacher",
        ),
    ] {
        let done = run(&words, out);
        assert!(
            done.status.success(),
            "{out}: {}",
            String::from_utf8_lossy(&done.stderr)
        );
        let rows = lines(&dir.path().join(out).join("results.jsonl"));
        assert_eq!(rows.len(), 2, "{out}");
        for l in rows {
            let r: serde_json::Value = serde_json::from_str(&l).unwrap();
            // The task scores calibrated: five distinct names besides the plain top five.
            let cal: Vec<&str> = r["calibrated_top5"]
                .as_array()
                .unwrap_or_else(|| panic!("{out}: {r}"))
                .iter()
                .map(|n| n.as_str().unwrap())
                .collect();
            assert_eq!(cal.len(), 5, "{r}");
            assert!(cal
                .iter()
                .all(|n| cal.iter().filter(|m| *m == n).count() == 1));
            assert_eq!(r["top5"][0], r["constrained"], "{r}");
        }
        let md = std::fs::read_to_string(dir.path().join(out).join("summary.md")).unwrap();
        assert!(md.contains("calibrated, top-5"), "{md}");
        let run_json = read_json(&dir.path().join(out).join("run.json"));
        let id = run_json.to_string();
        assert_eq!(out == "spae", !id.contains("\"words\""), "{id}");
        assert_eq!(out == "teacher", id.contains("scorer_sha256"), "{id}");
    }

    // A teacher comes with its words, and easy-VQA reads none.
    let lone = run(&["--words", "teacher"], "lone");
    assert!(!lone.status.success());
    assert!(String::from_utf8_lossy(&lone.stderr).contains("--teacher SPEC"));
    let easy = bin()
        .args([
            "eval-vqa",
            "--task",
            "caption",
            "--words",
            "teacher",
            "--teacher",
        ])
        .arg(&teacher)
        .output()
        .unwrap();
    assert!(!easy.status.success());
    assert!(String::from_utf8_lossy(&easy.stderr).contains("easy-VQA"));
}
