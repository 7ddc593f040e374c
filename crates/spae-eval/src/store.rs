//! Result folders, one way for every task: `run.json` says what produced the results (a rerun
//! with other settings is refused instead of mixing them), `results.jsonl` holds one line per
//! item, appended and flushed as each finishes, so a killed run loses at most the item in
//! flight and a rerun computes only what is missing.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::bail;
use crate::error::{Context, Result};

/// A JSONL file of items keyed by a number (an episode, a test item), with the items an
/// earlier run finished.
pub struct ResultStore<T> {
    path: PathBuf,
    done: BTreeMap<usize, T>,
    file: File,
    key: fn(&T) -> usize,
}

impl<T: Serialize + DeserializeOwned> ResultStore<T> {
    /// Opens (or creates) `path`. Lines a killed run left half-written are dropped with a
    /// warning and the file is rewritten without them; every complete line is kept.
    pub fn open(path: &Path, key: fn(&T) -> usize) -> Result<Self> {
        let mut done = BTreeMap::new();
        let mut kept = Vec::new();
        let mut dropped = 0usize;
        if path.is_file() {
            let f = File::open(path).with_context(|| format!("reading {}", path.display()))?;
            for line in BufReader::new(f).lines() {
                let line = line.with_context(|| format!("reading {}", path.display()))?;
                if line.trim().is_empty() {
                    continue;
                }
                match serde_json::from_str::<T>(&line) {
                    Ok(r) => {
                        kept.push(line);
                        done.insert(key(&r), r);
                    }
                    Err(_) => dropped += 1,
                }
            }
        }
        if dropped > 0 {
            tracing::warn!(
                "{}: dropped {dropped} incomplete line(s) an interrupted run left",
                path.display()
            );
            let mut text = kept.join("\n");
            text.push('\n');
            crate::util::write_atomic(path, &text)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            done,
            file,
            key,
        })
    }

    /// The finished item `key`, if any.
    pub fn get(&self, key: usize) -> Option<&T> {
        self.done.get(&key)
    }

    /// Every finished item, by key.
    pub fn done(&self) -> &BTreeMap<usize, T> {
        &self.done
    }

    pub fn append(&mut self, item: T) -> Result<()> {
        let line = serde_json::to_string(&item)?;
        writeln!(self.file, "{line}")
            .and_then(|_| self.file.flush())
            .with_context(|| format!("appending to {}", self.path.display()))?;
        self.done.insert((self.key)(&item), item);
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Creates `out` and writes `run.json` the first time; afterwards refuses a run whose
/// `identity` differs from the one that produced the results already there. `extra` (the
/// budget, the invocation) may change between runs.
pub fn check_identity(
    out: &Path,
    identity: &serde_json::Value,
    extra: &serde_json::Value,
) -> Result<()> {
    let identity = &with_arithmetic(identity);
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let path = out.join("run.json");
    if path.is_file() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let old: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a run description", path.display()))?;
        let old = &old["identity"];
        if old != identity {
            let differ: Vec<String> = identity
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, v)| old.get(k.as_str()) != Some(v))
                .map(|(k, v)| {
                    format!(
                        "{k}: {} -> {v}",
                        old.get(k.as_str()).unwrap_or(&serde_json::Value::Null)
                    )
                })
                .collect();
            bail!(
                "{} holds results of a run with other settings ({}); pass another --out, or delete the directory",
                out.display(),
                differ.join(", ")
            );
        }
    }
    let doc = serde_json::json!({ "identity": identity, "last_invocation": extra });
    crate::util::write_atomic(&path, &serde_json::to_string_pretty(&doc)?)
}

/// `identity` with, for a local LLM, the arithmetic it runs (`llm_client::local::ARITHMETIC`):
/// its answers depend on it, so a folder written by other kernels is not resumed as this
/// one's. API models' identities are unchanged.
fn with_arithmetic(identity: &serde_json::Value) -> serde_json::Value {
    let mut id = identity.clone();
    let local = id
        .get("llm")
        .and_then(|v| v.as_str())
        .and_then(|name| llm_client::ModelSpec::parse(name).ok())
        .is_some_and(|spec| {
            matches!(
                spec,
                llm_client::ModelSpec::Local(_) | llm_client::ModelSpec::Gguf(_)
            )
        });
    if local {
        id["llm_arithmetic"] = serde_json::json!(llm_client::local::ARITHMETIC);
    }
    id
}

/// A result folder ready for a run: `out` created, `run.json` checked against `identity`
/// (written the first time; `extra` may change between runs), and the items an earlier run
/// finished read back from `results.jsonl`, a torn last line repaired.
pub fn open_results<T: Serialize + DeserializeOwned>(
    out: &Path,
    identity: &serde_json::Value,
    extra: &serde_json::Value,
    key: fn(&T) -> usize,
) -> Result<ResultStore<T>> {
    check_identity(out, identity, extra)?;
    ResultStore::open(&out.join("results.jsonl"), key)
}

/// Where results go when no `--out` is given: under `./runs/`, never into a tracked folder.
pub fn default_out(parts: &[&str]) -> PathBuf {
    let mut p = PathBuf::from("runs");
    for part in parts {
        p.push(part);
    }
    p
}

/// What an error on item `item` says about the results kept: `done` items are saved in `out`,
/// and the same command resumes from them.
pub fn resume_hint(item: usize, done: usize, out: &Path) -> String {
    format!(
        "item {item} (the {done} finished before it are saved in {}; rerun the same command to resume)",
        out.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Item {
        i: usize,
        v: String,
    }

    #[test]
    fn a_torn_last_line_is_dropped_and_the_rest_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.jsonl");
        std::fs::write(
            &path,
            "{\"i\":0,\"v\":\"a\"}\n{\"i\":1,\"v\":\"b\"}\n{\"i\":2,\"v\":",
        )
        .unwrap();
        let mut store: ResultStore<Item> = ResultStore::open(&path, |r: &Item| r.i).unwrap();
        assert_eq!(store.done().len(), 2);
        assert_eq!(store.get(1).map(|r| r.v.as_str()), Some("b"));
        store
            .append(Item {
                i: 2,
                v: "c".into(),
            })
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        let again: ResultStore<Item> = ResultStore::open(&path, |r: &Item| r.i).unwrap();
        assert_eq!(again.done().len(), 3);
    }

    #[test]
    fn other_settings_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let a = serde_json::json!({"way": 2, "seed": 0});
        check_identity(dir.path(), &a, &serde_json::json!({})).unwrap();
        check_identity(dir.path(), &a, &serde_json::json!({"episodes": 5})).unwrap();
        let b = serde_json::json!({"way": 5, "seed": 0});
        let err = check_identity(dir.path(), &b, &serde_json::json!({})).unwrap_err();
        assert!(err.to_string().contains("way: 2 -> 5"), "{err}");
    }

    /// A local LLM's folder records its arithmetic, and one written without it (by the f32
    /// blocks) is not resumed; an API model's identity is left as it is.
    #[test]
    fn a_local_llm_folder_names_its_arithmetic() {
        let dir = tempfile::tempdir().unwrap();
        let local = serde_json::json!({"llm": "local:gemma3-270m", "seed": 0});
        check_identity(dir.path(), &local, &serde_json::json!({})).unwrap();
        let run: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("run.json")).unwrap())
                .unwrap();
        assert_eq!(
            run["identity"]["llm_arithmetic"],
            serde_json::json!(llm_client::local::ARITHMETIC)
        );
        // A folder from before: the same identity without the arithmetic.
        let old = tempfile::tempdir().unwrap();
        let doc = serde_json::json!({"identity": local, "last_invocation": {}});
        std::fs::write(old.path().join("run.json"), doc.to_string()).unwrap();
        let err = check_identity(old.path(), &local, &serde_json::json!({})).unwrap_err();
        assert!(err.to_string().contains("llm_arithmetic"), "{err}");
        let api = serde_json::json!({"llm": "openai:gpt-4o-mini", "seed": 0});
        let dir = tempfile::tempdir().unwrap();
        check_identity(dir.path(), &api, &serde_json::json!({})).unwrap();
        let run: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("run.json")).unwrap())
                .unwrap();
        assert!(run["identity"].get("llm_arithmetic").is_none());
    }
}
