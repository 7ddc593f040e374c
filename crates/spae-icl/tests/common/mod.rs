//! Helpers shared by the binary's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_spae-icl"));
    c.env("NO_COLOR", "1");
    c
}

/// Runs `cmd`, failing the test with its output unless it succeeds.
pub fn ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawning spae-icl");
    assert!(
        out.status.success(),
        "{cmd:?} failed\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A small real checkpoint: SmolLM2's vocabulary (first 512 words), narrow CNN.
pub fn small_checkpoint(dir: &Path) -> PathBuf {
    init_checkpoint(dir, "small", &["--widths", "8,16,16"])
}

/// An untrained checkpoint `dir/NAME.safetensors` on SmolLM2's first 512 words, with `init`
/// flags `extra`.
pub fn init_checkpoint(dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let ckpt = dir.join(format!("{name}.safetensors"));
    ok(bin()
        .args([
            "-q",
            "init",
            "--vocab",
            "smollm2-135m",
            "--max-entries",
            "512",
        ])
        .args(extra)
        .arg("-o")
        .arg(&ckpt));
    ckpt
}

/// A file of `datasets/samples`.
pub fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../datasets/samples")
        .join(name)
}
