//! `spae-icl run` end to end with a real local LLM (SmolLM2-135M, fetched on first use) on data
//! sets written in their exact layouts: mini-ImageNet and a Frozen-format file.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

mod common;

use common::{bin, ok, small_checkpoint as checkpoint};

/// A gray PNG with a pattern that depends on `seed`, so images differ.
fn write_image(path: &Path, seed: u32, side: u32) {
    let img = image::RgbImage::from_fn(side, side, |x, y| {
        let v = ((x * 7 + y * 13 + seed * 37) % 256) as u8;
        image::Rgb([v, v / 2, 255 - v])
    });
    img.save_with_format(path, image::ImageFormat::Png).unwrap();
}

/// mini-ImageNet's layout: images/*.jpg (here PNG bytes), test.csv of filename,wnid rows.
fn mini_imagenet(dir: &Path) -> PathBuf {
    let root = dir.join("mini-imagenet");
    std::fs::create_dir_all(root.join("images")).unwrap();
    let mut csv = String::from("filename,label\n");
    for (k, wnid) in ["n02129165", "n04522168", "n02110341"].iter().enumerate() {
        for j in 0..4 {
            let f = format!("{wnid}{j:08}.jpg");
            write_image(&root.join("images").join(&f), (k * 10 + j) as u32, 40);
            csv.push_str(&format!("{f},{wnid}\n"));
        }
    }
    std::fs::write(root.join("test.csv"), csv).unwrap();
    root
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    let f = std::fs::File::open(path).unwrap();
    std::io::BufReader::new(f)
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect()
}

fn asked(stderr: &[u8]) -> usize {
    let text = String::from_utf8_lossy(stderr);
    let line = text
        .lines()
        .find(|l| l.contains(" asked, "))
        .unwrap_or_else(|| panic!("no summary line in\n{text}"));
    let before = line.split(" asked").next().unwrap();
    before.rsplit(' ').next().unwrap().parse().unwrap()
}

fn run_args(ckpt: &Path, data: &Path, out: &Path, episodes: usize) -> Vec<String> {
    [
        "run",
        "--task",
        "mini-imagenet",
        "--llm",
        "local:smollm2-135m",
        "--text-prompts",
        "--scoring",
        "open,constrained,calibrated,constrained-decoding",
        "--episodes",
        &episodes.to_string(),
        "--checkpoint",
        &ckpt.display().to_string(),
        "--data",
        &data.display().to_string(),
        "--out",
        &out.display().to_string(),
        "--cache",
        &out.with_extension("sqlite").display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn mini_imagenet_run_writes_results_and_resumes_after_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = checkpoint(dir.path());
    let data = mini_imagenet(dir.path());
    let episodes = 6;

    // Uninterrupted reference run.
    let whole = dir.path().join("whole");
    let out = ok(bin().args(run_args(&ckpt, &data, &whole, episodes)));
    assert_eq!(asked(&out.stderr), episodes);
    let reference = lines(&whole.join("results.jsonl"));
    assert_eq!(reference.len(), episodes);
    for (i, r) in reference.iter().enumerate() {
        assert_eq!(r["episode"], i);
        for field in ["prompt_hash", "prediction", "answer", "correct"] {
            assert!(!r[field].is_null(), "episode {i} lacks {field}: {r}");
        }
        assert!(["lion", "vase", "dalmatian"].contains(&r["answer"].as_str().unwrap()));
        for s in ["open", "constrained", "calibrated", "constrained_decoding"] {
            assert!(r["scorings"][s]["correct"].is_boolean(), "{s}: {r}");
        }
        let classes = r["classes"].as_array().unwrap();
        assert!(classes.contains(&r["scorings"]["constrained"]["prediction"]));
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(whole.join("summary.json")).unwrap())
            .unwrap();
    let acc = summary["scorings"]["open"]["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));
    assert_eq!(summary["episodes"], episodes);
    assert!(
        summary["identity"]["checkpoint_sha256"]
            .as_str()
            .unwrap()
            .len()
            == 64
    );
    assert!(
        summary["identity"]["template_sha256"]
            .as_str()
            .unwrap()
            .len()
            == 64
    );
    let p = std::fs::read_to_string(whole.join("prompt-episode-0.txt")).unwrap();
    assert!(
        p.starts_with("Answer with ") && p.ends_with(" This is a"),
        "{p}"
    );
    let frozen = std::fs::read_to_string(whole.join("episodes.json")).unwrap();
    assert!(
        frozen.contains("question_image") && frozen.contains("caption_1"),
        "{frozen}"
    );

    // Killed after its first finished episode, then rerun to the end.
    let cut = dir.path().join("cut");
    let mut child = bin()
        .args(run_args(&ckpt, &data, &cut, episodes))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let results = cut.join("results.jsonl");
    let start = Instant::now();
    while std::fs::read_to_string(&results).map_or(0, |s| s.lines().count()) < 1 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no result line within 2 min"
        );
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().ok(); // SIGKILL
    child.wait().unwrap();
    let before = std::fs::read_to_string(&results)
        .unwrap()
        .lines()
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
        .count();
    assert!(before >= 1);
    let out = ok(bin().args(run_args(&ckpt, &data, &cut, episodes)));
    assert_eq!(
        asked(&out.stderr),
        episodes - before,
        "finished episodes were asked again"
    );
    let resumed = lines(&results);
    assert_eq!(resumed.len(), episodes);
    for (a, b) in reference.iter().zip(&resumed) {
        assert_eq!(a["episode"], b["episode"]);
        assert_eq!(a["prompt_hash"], b["prompt_hash"]);
        // Same answers; log-probabilities may differ in the last bits, as a resumed run
        // computes its first prompt without the previous one's cached prefix.
        for s in ["open", "constrained", "calibrated", "constrained_decoding"] {
            assert_eq!(
                a["scorings"][s]["prediction"], b["scorings"][s]["prediction"],
                "episode {} {s}",
                a["episode"]
            );
        }
    }

    // A third run asks nothing; other settings in the same directory are refused.
    let out = ok(bin().args(run_args(&ckpt, &data, &cut, episodes)));
    assert_eq!(asked(&out.stderr), 0);
    let mut other = run_args(&ckpt, &data, &cut, episodes);
    other.extend(["--way".into(), "3".into()]);
    let out = bin().args(other).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("other settings") && err.contains("way"),
        "{err}"
    );
}

#[test]
fn frozen_file_runs_with_exact_token_ids() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = checkpoint(dir.path());
    std::fs::create_dir_all(dir.path().join("img")).unwrap();
    for i in 0..6 {
        write_image(&dir.path().join(format!("img/{i}.png")), i, 28);
    }
    // Two real_name_mi-style records; image paths are relative to the file.
    let records = serde_json::json!([
        {"image_1": "img/0.png", "caption_1": "This is a dax.", "image_2": "img/1.png",
         "caption_2": "This is a blicket.", "question_image": "img/2.png",
         "question": "This is a", "answer": "dax"},
        {"image_1": "img/3.png", "caption_1": "This is a blicket.", "image_2": "img/4.png",
         "caption_2": "This is a dax.", "question_image": "img/5.png",
         "question": "This is a", "answer": "blicket"}
    ]);
    let file = dir.path().join("real_name_mi.json");
    std::fs::write(&file, records.to_string()).unwrap();
    let out_dir = dir.path().join("out");
    ok(bin()
        .args([
            "run",
            "--task",
            "frozen",
            "--llm",
            "local:smollm2-135m",
            "--constrained",
        ])
        .arg("--data")
        .arg(&file)
        .arg("--checkpoint")
        .arg(&ckpt)
        .arg("--out")
        .arg(&out_dir)
        .arg("--no-cache"));
    let rows = lines(&out_dir.join("results.jsonl"));
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["answer"], "dax");
    assert_eq!(rows[1]["answer"], "blicket");
    assert_eq!(rows[0]["classes"], serde_json::json!(["dax", "blicket"]));
    assert_eq!(rows[1]["classes"], serde_json::json!(["blicket", "dax"]));
    // Token prompts: BOS-free SmolLM2 prompt of induction + 2 support lines + query.
    assert!(rows[0]["prompt_tokens"].as_u64().unwrap() > 10);
    let p = std::fs::read_to_string(out_dir.join("prompt-episode-0.txt")).unwrap();
    assert!(p.starts_with("Answer with dax or blicket.\n"), "{p}");
    assert_eq!(p.lines().count(), 4, "{p}");
}

#[test]
fn run_errors_say_what_to_provide() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = checkpoint(dir.path());
    let out = bin()
        .args(["run", "--task", "mini-imagenet", "--checkpoint"])
        .arg(&ckpt)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--data") && err.contains("test.csv"), "{err}");

    let out = bin()
        .args(["run", "--task", "mini-imagenet", "--data"])
        .arg(dir.path().join("nowhere"))
        .arg("--checkpoint")
        .arg(&ckpt)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nowhere") && err.contains("test.csv"), "{err}");

    // A SmolLM2 codebook read by Gemma 3 as token ids would be wrong ids.
    let out = bin()
        .args([
            "run",
            "--episodes",
            "2",
            "--llm",
            "local:gemma3-270m",
            "--checkpoint",
        ])
        .arg(&ckpt)
        .arg("--out")
        .arg(dir.path().join("mismatch"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.to_lowercase().contains("smollm2") && err.contains("--text-prompts"),
        "{err}"
    );
}

#[test]
fn table1_fills_the_grid_and_a_rerun_is_served_from_results() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = checkpoint(dir.path());
    let out_dir = dir.path().join("table");
    let args = |cmd: &mut std::process::Command| {
        cmd.args(["table1", "--task", "sample", "--llm", "local:smollm2-135m"])
            .args([
                "--ways",
                "2",
                "--episodes",
                "1",
                "--scoring",
                "constrained,open",
            ])
            .arg("--checkpoint")
            .arg(&ckpt)
            .arg("--out")
            .arg(&out_dir)
            .arg("--cache")
            .arg(out_dir.with_extension("sqlite"));
    };
    let first = ok({
        let mut c = bin();
        args(&mut c);
        c
    }
    .env("SPAE_LOG", "info"));
    let md = std::fs::read_to_string(out_dir.join("table1.md")).unwrap();
    for row in [
        "SPAE, 2 layers",
        "SPAE, 3 layers",
        "oracle words",
        "random words",
    ] {
        let line = md
            .lines()
            .find(|l| l.starts_with(&format!("| {row} |")))
            .unwrap_or_else(|| panic!("no row {row} in\n{md}"));
        // name, words per image, 7 cells, average.
        assert_eq!(line.matches('|').count(), 11, "{line}");
        // Every cell carries its 95% interval.
        assert_eq!(line.matches(" [").count(), 7, "{line}");
    }
    assert!(
        md.contains("## Constrained") && md.contains("## Open-ended"),
        "{md}"
    );
    let cells = std::fs::read_dir(out_dir.join("cells")).unwrap().count();
    assert_eq!(cells, 4 * 7);
    let asked_first: usize = String::from_utf8_lossy(&first.stderr)
        .lines()
        .filter(|l| l.contains(" asked, "))
        .map(|l| asked(l.as_bytes()))
        .sum();
    assert_eq!(asked_first, 28);

    let second = ok({
        let mut c = bin();
        args(&mut c);
        c
    }
    .env("SPAE_LOG", "info"));
    let asked_again: usize = String::from_utf8_lossy(&second.stderr)
        .lines()
        .filter(|l| l.contains(" asked, "))
        .map(|l| asked(l.as_bytes()))
        .sum();
    assert_eq!(asked_again, 0);
    assert_eq!(
        std::fs::read_to_string(out_dir.join("table1.md")).unwrap(),
        md
    );
}

/// The grid runs a row's cells episode by episode together (the most repeats first, so a
/// local model reuses each prompt's shared beginning); each cell must still hold what a run
/// of its settings alone computes: the same answers and log-probabilities.
#[test]
fn a_table1_cell_equals_its_run_alone() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = checkpoint(dir.path());
    let out_dir = dir.path().join("table");
    let scoring = "constrained,open,calibrated";
    ok(bin()
        .args(["table1", "--task", "sample", "--llm", "local:smollm2-135m"])
        .args(["--ways", "2", "--episodes", "3", "--columns", "1,4,5"])
        .args(["--scoring", scoring, "--no-cache"])
        .arg("--checkpoint")
        .arg(&ckpt)
        .arg("--out")
        .arg(&out_dir));
    let cells: Vec<PathBuf> = std::fs::read_dir(out_dir.join("cells"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let scorings = |path: &Path| -> Vec<serde_json::Value> {
        lines(&path.join("results.jsonl"))
            .into_iter()
            .map(|l| l["scorings"].clone())
            .collect()
    };
    for repeats in [0, 1, 3] {
        let name = format!("-L2-2way-1shot-r{repeats}-ind");
        let cell = cells
            .iter()
            .find(|c| {
                let n = c.file_name().unwrap().to_string_lossy().to_string();
                n.starts_with("spae-") && n.ends_with(&name)
            })
            .unwrap_or_else(|| panic!("no cell *{name} in {cells:?}"));
        let alone = dir.path().join(format!("alone-r{repeats}"));
        ok(bin()
            .args(["run", "--task", "sample", "--llm", "local:smollm2-135m"])
            .args(["--way", "2", "--shots", "1", "--induction", "--layers", "2"])
            .args(["--repeats", &repeats.to_string(), "--episodes", "3"])
            .args(["--scoring", scoring, "--no-cache"])
            .arg("--checkpoint")
            .arg(&ckpt)
            .arg("--out")
            .arg(&alone));
        let (got, want) = (scorings(cell), scorings(&alone));
        assert_eq!(got.len(), 3);
        assert_eq!(got, want, "repeats {repeats}");
    }
}

#[test]
fn generate_writes_each_layer_of_codebook_words() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = checkpoint(dir.path());
    let data = format!(
        "folder:{}",
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../datasets/samples/fashion-mnist-test-60")
            .display()
    );
    for (name, extra) in [("constrained", None), ("free", Some("--unconstrained"))] {
        let png = dir.path().join(format!("{name}.png"));
        let mut cmd = bin();
        cmd.args([
            "generate", "--class", "sneaker", "--shots", "6", "--count", "2",
        ])
        .args(["--layers", "2", "--llm", "local:smollm2-135m", "--no-cache"])
        .args(["--data", &data])
        .arg("--checkpoint")
        .arg(&ckpt)
        .arg("-o")
        .arg(&png);
        if let Some(e) = extra {
            cmd.arg(e);
        }
        ok(&mut cmd);
        let img = image::open(&png).unwrap();
        assert_eq!((img.width(), img.height()), (2 * 28, 28), "{name}");
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(png.with_extension("json")).unwrap())
                .unwrap();
        let images = doc["images"].as_array().unwrap();
        assert_eq!(images.len(), 2);
        for im in images {
            let sizes: Vec<usize> = im["layers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l.as_array().unwrap().len())
                .collect();
            assert_eq!(sizes, [1, 4], "{name}: {im}");
            if name == "constrained" {
                // Every word the model wrote is a codebook entry.
                assert_eq!(im["exact"], 5, "{im}");
                assert_eq!(im["filled_at_random"], 0, "{im}");
            }
        }
        assert_eq!(doc["constrained_to_codebook"], name == "constrained");
        assert_eq!(doc["examples"].as_array().unwrap().len(), 6);
        assert_eq!(doc["order"], "random");
    }
    let out = bin()
        .args([
            "generate", "--class", "unicorn", "--shots", "6", "--data", &data,
        ])
        .args(["--llm", "local:smollm2-135m", "--no-cache"])
        .arg("--checkpoint")
        .arg(&ckpt)
        .args(["-o", "x.png"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unicorn") && err.contains("sneaker"), "{err}");
}

#[test]
fn eval_generate_scores_the_llm_beside_its_baselines() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = checkpoint(dir.path());
    let out_dir = dir.path().join("eval");
    ok(bin()
        .args([
            "-q",
            "eval-generate",
            "--llm",
            "local:smollm2-135m",
            "--no-cache",
        ])
        .args(["--shots", "4", "--count", "1", "--layers", "1"])
        .arg("--checkpoint")
        .arg(&ckpt)
        .arg("--out")
        .arg(&out_dir));
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("eval-generate.json")).unwrap())
            .unwrap();
    let rows = doc["rows"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["method"].as_str().unwrap()).collect();
    assert_eq!(names, ["llm", "random words", "copy an example"]);
    assert_eq!(doc["order"], "random");
    let sha = {
        use sha2::Digest;
        format!("{:x}", sha2::Sha256::digest(std::fs::read(&ckpt).unwrap()))
    };
    assert_eq!(doc["checkpoint_sha256"], sha.as_str());
    for r in rows {
        assert_eq!(r["images"], 10, "{r}");
        let acc = r["judge_accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc));
    }
    // A copy is never novel; constrained decoding writes no unknown word.
    assert_eq!(rows[2]["novel"], 0.0);
    assert_eq!(rows[0]["unknown_word_rate"], 0.0);
    assert!(out_dir.join("generated.png").is_file());
    assert!(std::fs::read_to_string(out_dir.join("eval-generate.md"))
        .unwrap()
        .contains("| copy an example |"));
}
