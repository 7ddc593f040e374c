//! Reading an LLM's vocabulary and input-embedding table: GGUF, or HF safetensors + tokenizer.json.

use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};

use super::{Codebook, CodebookInfo, VocabFilter, WordMarker};
use crate::{io_err, Result, SpaeError};

fn vocab_err(path: &Path, reason: impl Into<String>) -> SpaeError {
    SpaeError::Vocab {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// GGUF token type 1 = normal (2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte).
const GGUF_NORMAL_TOKEN: i32 = 1;

pub(super) fn from_gguf(path: &Path, filter: &VocabFilter, device: &Device) -> Result<Codebook> {
    let mut f = File::open(path).map_err(io_err(path))?;
    let content = gguf_file::Content::read(&mut f)
        .map_err(|e| vocab_err(path, format!("not a readable GGUF file: {e}")))?;
    let meta = &content.metadata;
    let pieces: Vec<String> = meta
        .get("tokenizer.ggml.tokens")
        .ok_or_else(|| vocab_err(path, "no tokenizer.ggml.tokens in the GGUF metadata"))?
        .to_vec()
        .and_then(|v| v.iter().map(|t| t.to_string().cloned()).collect())
        .map_err(|e| vocab_err(path, format!("tokenizer.ggml.tokens: {e}")))?;
    let types: Option<Vec<i32>> = match meta.get("tokenizer.ggml.token_type") {
        Some(v) => Some(
            v.to_vec()
                .and_then(|v| v.iter().map(|t| t.to_i32()).collect())
                .map_err(|e| vocab_err(path, format!("tokenizer.ggml.token_type: {e}")))?,
        ),
        None => None,
    };
    let marker = match meta
        .get("tokenizer.ggml.model")
        .and_then(|m| m.to_string().ok())
        .map(String::as_str)
    {
        Some("gpt2") => WordMarker::Gpt2,
        Some("llama") => WordMarker::SentencePiece,
        _ => WordMarker::detect(pieces.iter().map(String::as_str)),
    };
    let kept = filter.select(&pieces, marker, |i| {
        types
            .as_ref()
            .is_none_or(|t| t.get(i) == Some(&GGUF_NORMAL_TOKEN))
    });
    check_includes(filter, &pieces, marker, &kept, path)?;
    if kept.is_empty() {
        return Err(SpaeError::EmptyCodebook {
            path: path.to_path_buf(),
            filter: filter.to_string(),
        });
    }
    let table = content
        .tensor(&mut f, "token_embd.weight", &Device::Cpu)
        .map_err(|e| vocab_err(path, format!("token_embd.weight: {e}")))?
        .dequantize(&Device::Cpu)?;
    let (rows, _dim) = table.dims2()?;
    if rows != pieces.len() {
        return Err(vocab_err(
            path,
            format!(
                "token_embd.weight has {rows} rows for {} tokens",
                pieces.len()
            ),
        ));
    }
    let info = CodebookInfo {
        source: file_label(path),
        marker,
        filter: filter.clone(),
        vocab_size: pieces.len(),
        projection: None,
    };
    select_rows(info, &pieces, &kept, &table, device)
}

fn select_rows(
    info: CodebookInfo,
    pieces: &[String],
    kept: &[usize],
    table: &Tensor,
    device: &Device,
) -> Result<Codebook> {
    let ids: Vec<u32> = kept.iter().map(|&i| i as u32).collect();
    let idx = Tensor::new(ids.as_slice(), table.device())?;
    let rows = table.index_select(&idx, 0)?.to_device(device)?;
    let kept_pieces = kept.iter().map(|&i| pieces[i].clone()).collect();
    Codebook::new(info, ids, kept_pieces, rows)
}

fn file_label(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Names under which HF checkpoints keep the input-embedding table.
const EMBEDDING_NAMES: &[&str] = &[
    "model.embed_tokens.weight",
    "embed_tokens.weight",
    "model.language_model.embed_tokens.weight",
    "transformer.wte.weight",
    "embeddings.word_embeddings.weight",
    "bert.embeddings.word_embeddings.weight",
    "roberta.embeddings.word_embeddings.weight",
];

pub(super) fn from_hf_dir(dir: &Path, filter: &VocabFilter, device: &Device) -> Result<Codebook> {
    let tok_path = dir.join("tokenizer.json");
    let (pieces, special) = read_tokenizer_json(&tok_path)?;
    let marker = WordMarker::detect(pieces.iter().map(String::as_str));
    let kept = filter.select(&pieces, marker, |i| {
        !special.contains(&i) && !pieces[i].is_empty()
    });
    check_includes(filter, &pieces, marker, &kept, &tok_path)?;
    if kept.is_empty() {
        return Err(SpaeError::EmptyCodebook {
            path: tok_path,
            filter: filter.to_string(),
        });
    }
    let files = safetensors_files(dir)?;
    // SAFETY: the files are mapped read-only and not modified while the map lives
    // (the map is dropped at the end of this function).
    let st = unsafe { candle_core::safetensors::MmapedSafetensors::multi(&files) }
        .map_err(|e| vocab_err(dir, format!("cannot read safetensors: {e}")))?;
    let names: Vec<String> = st.tensors().into_iter().map(|(n, _)| n).collect();
    let name = EMBEDDING_NAMES
        .iter()
        .find(|n| names.iter().any(|m| m == *n))
        .map(|n| n.to_string())
        .ok_or_else(|| {
            vocab_err(
                dir,
                format!(
                    "no input-embedding tensor; looked for {}",
                    EMBEDDING_NAMES.join(", ")
                ),
            )
        })?;
    let table = st
        .load(&name, &Device::Cpu)?
        .to_dtype(candle_core::DType::F32)?;
    let (rows, _dim) = table.dims2()?;
    if let Some(&bad) = kept.iter().find(|&&i| i >= rows) {
        return Err(vocab_err(
            dir,
            format!("{name} has {rows} rows but tokenizer.json has token id {bad}"),
        ));
    }
    let info = CodebookInfo {
        source: file_label(dir),
        marker,
        filter: filter.clone(),
        vocab_size: pieces.len(),
        projection: None,
    };
    select_rows(info, &pieces, &kept, &table, device)
}

fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(vocab_err(dir, "no .safetensors file in this directory"));
    }
    Ok(files)
}

/// Surface strings by id, and the ids of special (added) tokens, from an HF tokenizer.json.
fn read_tokenizer_json(path: &Path) -> Result<(Vec<String>, std::collections::HashSet<usize>)> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| vocab_err(path, format!("not valid JSON: {e}")))?;
    let vocab = &json["model"]["vocab"];
    let mut by_id: Vec<(usize, String)> = match vocab {
        // BPE / WordPiece / WordLevel: {"piece": id}
        serde_json::Value::Object(map) => map
            .iter()
            .map(|(p, id)| {
                id.as_u64()
                    .map(|id| (id as usize, p.clone()))
                    .ok_or_else(|| vocab_err(path, format!("model.vocab[{p:?}] is not an id")))
            })
            .collect::<Result<_>>()?,
        // Unigram: [["piece", score], ...], id = position
        serde_json::Value::Array(list) => list
            .iter()
            .enumerate()
            .map(|(id, e)| {
                e.get(0)
                    .and_then(|p| p.as_str())
                    .map(|p| (id, p.to_string()))
                    .ok_or_else(|| {
                        vocab_err(path, format!("model.vocab[{id}] is not [piece, score]"))
                    })
            })
            .collect::<Result<_>>()?,
        _ => return Err(vocab_err(path, "no model.vocab (expected a map or a list)")),
    };
    let mut special = std::collections::HashSet::new();
    if let Some(added) = json["added_tokens"].as_array() {
        for t in added {
            if let (Some(id), Some(content)) = (t["id"].as_u64(), t["content"].as_str()) {
                by_id.push((id as usize, content.to_string()));
                if t["special"].as_bool().unwrap_or(true) {
                    special.insert(id as usize);
                }
            }
        }
    }
    let n = by_id.iter().map(|(id, _)| id + 1).max().unwrap_or(0);
    let mut pieces = vec![String::new(); n];
    for (id, p) in by_id {
        pieces[id] = p;
    }
    Ok((pieces, special))
}

/// Every word the filter must include is a whole-word entry of this vocabulary.
fn check_includes(
    filter: &VocabFilter,
    pieces: &[String],
    marker: WordMarker,
    kept: &[usize],
    path: &Path,
) -> Result<()> {
    let missing = filter.missing_includes(pieces, marker, kept);
    if missing.is_empty() {
        return Ok(());
    }
    Err(SpaeError::Config(format!(
        "{}: no whole-word entry for {} (words to include must be single tokens of this \
         vocabulary that pass the filter)",
        path.display(),
        missing.join(", ")
    )))
}
