//! The binary end to end on temp dirs: init -> tokenize -> decode / reconstruct, and errors.

use std::path::Path;
use std::process::Stdio;

mod common;

use common::{bin, ok as run, sample, small_checkpoint};

#[test]
fn init_tokenize_decode_reconstruct() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = small_checkpoint(dir.path());

    let out = run(bin()
        .arg("tokenize")
        .arg(sample("mnist-seven.png"))
        .arg("--checkpoint")
        .arg(&ckpt)
        .args(["--layers", "3"]));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    let counts: Vec<usize> = lines.iter().map(|l| l.split_whitespace().count()).collect();
    assert_eq!(counts, vec![1, 4, 16]);
    assert!(
        text.split_whitespace()
            .all(|w| w.bytes().all(|b| b.is_ascii_alphabetic())),
        "{text}"
    );

    // Words on stdin -> PNG, equal to reconstruct at the same depth.
    let from_words = dir.path().join("from_words.png");
    let mut child = bin()
        .args(["decode", "--checkpoint"])
        .arg(&ckpt)
        .arg("-o")
        .arg(&from_words)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    let recon = dir.path().join("recon.png");
    run(bin()
        .arg("reconstruct")
        .arg(sample("mnist-seven.png"))
        .arg("--checkpoint")
        .arg(&ckpt)
        .args(["--layers", "3", "-o"])
        .arg(&recon));
    assert_eq!(
        std::fs::read(&from_words).unwrap(),
        std::fs::read(&recon).unwrap()
    );

    // JSON for two images decodes to a 56-pixel-wide strip.
    let out = run(bin()
        .arg("tokenize")
        .arg(sample("mnist-seven.png"))
        .arg(sample("mnist-three.png"))
        .arg("--checkpoint")
        .arg(&ckpt)
        .args(["--format", "json"]));
    let json_path = dir.path().join("tokens.json");
    std::fs::write(&json_path, &out.stdout).unwrap();
    let strip = dir.path().join("strip.png");
    run(bin()
        .args(["decode", "--input"])
        .arg(&json_path)
        .arg("--checkpoint")
        .arg(&ckpt)
        .arg("-o")
        .arg(&strip));
    let png = std::fs::read(&strip).unwrap();
    // PNG IHDR: width at bytes 16..20, height at 20..24.
    assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 56);
    assert_eq!(u32::from_be_bytes(png[20..24].try_into().unwrap()), 28);
}

#[test]
fn errors_name_the_input_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = small_checkpoint(dir.path());

    let bad_img = dir.path().join("broken.png");
    std::fs::write(&bad_img, b"not a png").unwrap();
    let out = bin()
        .arg("tokenize")
        .arg(&bad_img)
        .arg("--checkpoint")
        .arg(&ckpt)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("broken.png") && err.contains("cannot read image"),
        "{err}"
    );

    let bad_ckpt = dir.path().join("bad.safetensors");
    let bytes = std::fs::read(&ckpt).unwrap();
    std::fs::write(&bad_ckpt, &bytes[..bytes.len() / 3]).unwrap();
    let out = bin()
        .arg("tokenize")
        .arg(sample("mnist-seven.png"))
        .arg("--checkpoint")
        .arg(&bad_ckpt)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.safetensors") && err.contains("spae-icl init"),
        "{err}"
    );

    let out = bin()
        .args(["decode", "--checkpoint"])
        .arg(&ckpt)
        .arg("-o")
        .arg(dir.path().join("x.png"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no words"));

    let out = bin()
        .args(["tokenize", "--layers", "9", "--checkpoint"])
        .arg(&ckpt)
        .arg(sample("mnist-seven.png"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("depth 9"));
}

#[test]
fn vocab_reports_filtered_sizes() {
    let out = run(bin().args(["-q", "vocab", "--vocab", "smollm2-135m", "--format", "json"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["vocab_size"], 49152);
    assert_eq!(v["entries"], 24839);
    assert_eq!(v["dim"], 576);

    // A task's label words kept past the cap; a word the vocabulary lacks is an error.
    let out = run(bin()
        .args(["-q", "vocab", "--vocab", "smollm2-135m", "--format", "json"])
        .args([
            "--max-entries",
            "50",
            "--include-words",
            "triangle,rectangle",
        ]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["entries"], 52);
    let out = bin()
        .args(["-q", "vocab", "--vocab", "smollm2-135m"])
        .args(["--max-entries", "50", "--include-words", "triangle,zqxwv"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("zqxwv") && !err.contains("triangle"), "{err}");
}

#[test]
fn chat_continues_a_prompt_with_the_local_model() {
    let out = run(bin()
        .args([
            "-q",
            "chat",
            "--llm",
            "local:gemma3-270m",
            "--max-tokens",
            "6",
        ])
        .arg("Q: What is the capital of France?\nA:"));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Paris"), "{text}");

    let out = bin()
        .args(["chat", "--llm", "openai:gpt-4o-mini", "hi"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("openai"), "{err}");
}

/// `train` on an image folder for a few steps, then `--resume` to more steps: metrics continue,
/// the step count is kept, and the checkpoint tokenizes.
#[test]
fn train_and_resume_on_an_image_folder() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for (class, shade) in [("dark", 30u8), ("light", 220u8)] {
        std::fs::create_dir_all(data.join(class)).unwrap();
        for i in 0..3u8 {
            let img = image::GrayImage::from_fn(28, 28, |x, y| {
                image::Luma([if (x + y) % 7 == u32::from(i) {
                    255
                } else {
                    shade
                }])
            });
            img.save(data.join(class).join(format!("{i}.png"))).unwrap();
        }
    }
    let out = dir.path().join("run");
    let train = |steps: &str, resume: bool, extra: &[&str]| {
        let mut cmd = bin();
        cmd.args([
            "-q",
            "train",
            "--vocab",
            "smollm2-135m",
            "--max-entries",
            "256",
            "--widths",
            "8,16,16",
        ])
        .arg("--data")
        .arg(format!("folder:{}", data.display()))
        .args([
            "--steps",
            steps,
            "--batch-size",
            "4",
            "--warmup",
            "1",
            "--checkpoint-every",
            "2",
            "--out",
        ])
        .arg(&out);
        if resume {
            cmd.arg("--resume");
        }
        run(cmd.args(extra));
    };
    // Every step of the first run at the full depth (5 layers).
    train("4", false, &["--full-depth-share", "1"]);
    let lines = |p: &Path| std::fs::read_to_string(p).unwrap().lines().count();
    assert_eq!(lines(&out.join("metrics.jsonl")), 4);
    let depths: Vec<u64> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["depth"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(depths, [5, 5, 5, 5]);
    train("6", true, &[]);
    assert_eq!(lines(&out.join("metrics.jsonl")), 6);
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("train.json")).unwrap()).unwrap();
    assert_eq!(state["step"], 6);
    let last: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(out.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(last["step"], 5, "resumed run continues the step count");
    run(bin()
        .arg("tokenize")
        .arg(sample("mnist-three.png"))
        .arg("--checkpoint")
        .arg(out.join("checkpoint.safetensors")));

    // A second phase from that checkpoint with the encoder frozen: the decoder trains, and
    // no image's words change.
    let phase2 = dir.path().join("phase2");
    run(bin()
        .args(["-q", "train", "--freeze-encoder", "--init"])
        .arg(out.join("checkpoint.safetensors"))
        .arg("--data")
        .arg(format!("folder:{}", data.display()))
        .args([
            "--steps",
            "3",
            "--batch-size",
            "4",
            "--warmup",
            "1",
            "--out",
        ])
        .arg(&phase2));
    let phase2_metrics = std::fs::read_to_string(phase2.join("metrics.jsonl")).unwrap();
    assert_eq!(phase2_metrics.lines().count(), 3);
    for l in phase2_metrics.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["total"], v["recon"], "reconstruction only: {l}");
    }
    let words = |ckpt: &Path| {
        run(bin()
            .args(["tokenize", "--format", "json"])
            .arg(sample("mnist-three.png"))
            .arg(sample("mnist-seven.png"))
            .arg("--checkpoint")
            .arg(ckpt))
        .stdout
    };
    assert_eq!(
        words(&out.join("checkpoint.safetensors")),
        words(&phase2.join("checkpoint.safetensors"))
    );
    assert_ne!(
        std::fs::read(out.join("checkpoint.safetensors")).unwrap(),
        std::fs::read(phase2.join("checkpoint.safetensors")).unwrap(),
        "the decoder trained"
    );
    // Growing it in that phase: one more full-resolution layer and a third decoder block.
    // The five layers every image had keep their words; the sixth is new.
    let grown = dir.path().join("grown");
    let grow = |extra: &[&str], out: &Path| {
        bin()
            .args(["-q", "train", "--freeze-encoder", "--init"])
            .arg(phase2.join("checkpoint.safetensors"))
            .arg("--data")
            .arg(format!("folder:{}", data.display()))
            .args(["--steps", "2", "--batch-size", "4", "--warmup", "1"])
            .args(extra)
            .arg("--out")
            .arg(out)
            .output()
            .unwrap()
    };
    let ok = grow(&["--add-layers", "8", "--dec-blocks", "3"], &grown);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let layers = |ckpt: &Path, depth: Option<&str>| -> Vec<Vec<String>> {
        let mut c = bin();
        c.args(["tokenize", "--format", "json"])
            .arg(sample("mnist-three.png"))
            .arg("--checkpoint")
            .arg(ckpt);
        if let Some(d) = depth {
            c.args(["--layers", d]);
        }
        let v: serde_json::Value = serde_json::from_slice(&run(&mut c).stdout).unwrap();
        let v = if v.is_array() { v[0].clone() } else { v };
        v["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                l["words"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|w| w.as_str().unwrap().to_string())
                    .collect()
            })
            .collect()
    };
    let before = layers(&phase2.join("checkpoint.safetensors"), None);
    let after = layers(&grown.join("checkpoint.safetensors"), None);
    assert_eq!(before.len(), 5);
    assert_eq!(after.len(), 6);
    assert_eq!(after[..5], before[..]);
    assert_eq!(after[5].len(), 64);
    let bad = grow(&["--add-layers", "4"], &dir.path().join("bad-grow"));
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("--add-layers") && err.contains("4"), "{err}");

    let bad = bin()
        .args(["train", "--freeze-encoder", "--out"])
        .arg(dir.path().join("x"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--init"));

    // A bad data spec says what is accepted.
    let bad = bin()
        .args(["train", "--data", "cifar", "--out"])
        .arg(dir.path().join("x"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("folder:DIR"));
    let bad = bin()
        .args(["train", "--full-depth-share", "1.5", "--out"])
        .arg(dir.path().join("x"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--full-depth-share 1.5"));
}

#[test]
fn eval_tokenizer_reports_one_row_per_depth() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = small_checkpoint(dir.path());
    let out = run(bin()
        .args([
            "-q",
            "eval-tokenizer",
            "--data",
            "fashion-mnist",
            "--limit",
            "8",
            "--format",
            "json",
            "--checkpoint",
        ])
        .arg(&ckpt));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 5);
    let tokens: Vec<u64> = rows.iter().map(|r| r["tokens"].as_u64().unwrap()).collect();
    assert_eq!(tokens, vec![1, 5, 21, 85, 149]);
    for r in &rows {
        let psnr = r["psnr"].as_f64().unwrap();
        let ssim = r["ssim"].as_f64().unwrap();
        assert!(
            psnr.is_finite() && psnr > 0.0 && (-1.0..=1.0).contains(&ssim),
            "{r}"
        );
        assert!(r["distinct_entries"].as_u64().unwrap() >= 1);
        // The built-in scorer's relevance metrics.
        let hit = r["top_k_hit_rate"].as_f64().unwrap();
        let rel = r["mean_relevance"].as_f64().unwrap();
        assert!(
            (0.0..=1.0).contains(&hit) && (-1.0..=1.0).contains(&rel),
            "{r}"
        );
        assert_eq!(r["top_k"], 50);
    }
}

/// `compare` pairs two runs' episodes and prints the exact McNemar test per scoring; a
/// folder without results is an error naming it.
#[test]
fn compare_pairs_two_runs_by_episode() {
    let dir = tempfile::tempdir().unwrap();
    let line = |i: usize, right: bool| {
        format!(
            r#"{{"episode":{i},"prompt_hash":"h","prediction":"cat","answer":"cat","correct":{right},"classes":["cat","dog"],"query":"q{i}","prompt_tokens":null,"scorings":{{"constrained":{{"prediction":"cat","correct":{right}}}}}}}"#
        )
    };
    // A: right on all six; B: right on the first only. Five discordant, all one way:
    // p = 2 * 2^-5 = 0.0625.
    for (name, right) in [
        ("a", [true; 6]),
        ("b", [true, false, false, false, false, false]),
    ] {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        let lines: Vec<String> = (0..6).map(|i| line(i, right[i])).collect();
        std::fs::write(d.join("results.jsonl"), lines.join("\n")).unwrap();
    }
    let out = run(bin()
        .arg("compare")
        .arg(dir.path().join("a"))
        .arg(dir.path().join("b")));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("| constrained | 6 | 100.0% | 16.7% | 5 | 0 | 0.062 |"),
        "{text}"
    );

    let out = bin()
        .arg("compare")
        .arg(dir.path().join("a"))
        .arg(dir.path().join("missing"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("missing") && err.contains("results.jsonl"),
        "{err}"
    );
}
