//! Checkpoints: one safetensors file with the weights, the filtered codebook and the config.
//!
//! Layout (format version 1):
//! - metadata `spae.format` = `spae-icl-checkpoint`, `spae.format_version` = `1`,
//!   `spae.model` = [`ModelConfig`] JSON, `spae.codebook` = [`CodebookInfo`] JSON;
//! - tensors `model.<var>` (f32), `codebook.embeddings` (V x d, f16),
//!   `codebook.token_ids` (V, u32), `codebook.pieces` (u8: the surface strings, NUL-separated).
//!
//! A checkpoint is self-contained: tokenizing needs no LLM file.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::safetensors::Load;
use candle_core::{DType, Device, Tensor};
use safetensors::SafeTensors;

use crate::codebook::{Codebook, CodebookInfo};
use crate::model::ModelConfig;
use crate::spae::SpaeModel;
use crate::{io_err, Result, SpaeError};

pub const FORMAT: &str = "spae-icl-checkpoint";
pub const FORMAT_VERSION: u32 = 1;

fn ckpt_err(path: &Path, reason: impl Into<String>) -> SpaeError {
    SpaeError::Checkpoint {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

impl SpaeModel {
    /// Write the checkpoint to `path` atomically (a temporary file beside it, then a rename),
    /// so a crash never leaves a half-written checkpoint under the final name.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors: BTreeMap<String, Tensor> = BTreeMap::new();
        for (name, var) in self.named_vars() {
            tensors.insert(
                format!("model.{name}"),
                var.as_tensor().to_device(&Device::Cpu)?,
            );
        }
        let cb = self.codebook();
        tensors.insert(
            "codebook.embeddings".into(),
            cb.embeddings()
                .to_dtype(DType::F16)?
                .to_device(&Device::Cpu)?,
        );
        tensors.insert(
            "codebook.token_ids".into(),
            Tensor::new(cb.token_ids(), &Device::Cpu)?,
        );
        let joined = cb.pieces().join("\0").into_bytes();
        let n = joined.len();
        tensors.insert(
            "codebook.pieces".into(),
            Tensor::from_vec(joined, n, &Device::Cpu)?,
        );

        let metadata: HashMap<String, String> = [
            ("spae.format".to_string(), FORMAT.to_string()),
            (
                "spae.format_version".to_string(),
                FORMAT_VERSION.to_string(),
            ),
            ("spae.model".to_string(), to_json(path, self.config())?),
            ("spae.codebook".to_string(), to_json(path, cb.info())?),
        ]
        .into_iter()
        .collect();

        write_atomic(path, &tensors, metadata)
    }

    /// Read a checkpoint written by [`SpaeModel::save`]. A truncated file, another format
    /// version, or a config that does not match the tensors is an error naming the file.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(io_err(path))?;
        Self::load_bytes(&bytes, path, device)
    }

    /// [`SpaeModel::load`] from bytes in memory; `path` names them in errors.
    pub fn load_bytes(bytes: &[u8], path: &Path, device: &Device) -> Result<Self> {
        let (_, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| ckpt_err(path, format!("truncated, or not a safetensors file: {e}")))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let get = |key: &str| {
            meta.get(key).ok_or_else(|| {
                ckpt_err(
                    path,
                    format!("not a spae-icl checkpoint: no {key} metadata"),
                )
            })
        };
        if get("spae.format")? != FORMAT {
            return Err(ckpt_err(
                path,
                format!(
                    "spae.format is {:?}, expected {FORMAT:?}",
                    meta["spae.format"]
                ),
            ));
        }
        let version = get("spae.format_version")?;
        if version.parse::<u32>().ok() != Some(FORMAT_VERSION) {
            return Err(ckpt_err(
                path,
                format!("checkpoint format version {version}; this build reads version {FORMAT_VERSION}"),
            ));
        }
        let cfg: ModelConfig = serde_json::from_str(get("spae.model")?)
            .map_err(|e| ckpt_err(path, format!("spae.model: {e}")))?;
        let info: CodebookInfo = serde_json::from_str(get("spae.codebook")?)
            .map_err(|e| ckpt_err(path, format!("spae.codebook: {e}")))?;
        cfg.validate().map_err(|e| ckpt_err(path, e.to_string()))?;

        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| ckpt_err(path, format!("truncated or corrupt tensor data: {e}")))?;
        let load = |name: &str| -> Result<Tensor> {
            let view = st
                .tensor(name)
                .map_err(|_| ckpt_err(path, format!("missing tensor {name}")))?;
            view.load(&Device::Cpu)
                .map_err(|e| ckpt_err(path, format!("tensor {name}: {e}")))
        };
        let codebook = read_codebook(path, info, &load)?;
        let model =
            SpaeModel::new(cfg, codebook, device).map_err(|e| ckpt_err(path, e.to_string()))?;

        let vars = model.named_vars();
        for (name, var) in &vars {
            let key = format!("model.{name}");
            let t = load(&key)?;
            if t.dims() != var.dims() {
                return Err(ckpt_err(
                    path,
                    format!(
                        "tensor {key} has shape {:?}, the config expects {:?}",
                        t.dims(),
                        var.dims()
                    ),
                ));
            }
            var.set(&t.to_dtype(DType::F32)?.to_device(device)?)?;
        }
        let known: std::collections::HashSet<String> =
            vars.iter().map(|(n, _)| format!("model.{n}")).collect();
        if let Some(extra) = st
            .names()
            .into_iter()
            .find(|n| n.starts_with("model.") && !known.contains(*n))
        {
            return Err(ckpt_err(
                path,
                format!("tensor {extra} is not part of the model its config describes"),
            ));
        }
        Ok(model)
    }
}

fn read_codebook(
    path: &Path,
    info: CodebookInfo,
    load: &dyn Fn(&str) -> Result<Tensor>,
) -> Result<Codebook> {
    let rows = load("codebook.embeddings")?;
    let ids = load("codebook.token_ids")?;
    let pieces = load("codebook.pieces")?;
    let (v, _d) = rows.dims2().map_err(|_| {
        ckpt_err(
            path,
            format!(
                "codebook.embeddings has shape {:?}, expected (V, d)",
                rows.dims()
            ),
        )
    })?;
    let ids: Vec<u32> = ids
        .to_dtype(DType::U32)
        .and_then(|t| t.to_vec1())
        .map_err(|e| ckpt_err(path, format!("codebook.token_ids: {e}")))?;
    let bytes: Vec<u8> = pieces
        .to_vec1()
        .map_err(|e| ckpt_err(path, format!("codebook.pieces: {e}")))?;
    let text =
        String::from_utf8(bytes).map_err(|_| ckpt_err(path, "codebook.pieces is not UTF-8"))?;
    let pieces: Vec<String> = text.split('\0').map(str::to_string).collect();
    if ids.len() != v || pieces.len() != v {
        return Err(ckpt_err(
            path,
            format!(
                "codebook has {} token ids and {} strings for {v} rows",
                ids.len(),
                pieces.len()
            ),
        ));
    }
    Codebook::new(info, ids, pieces, rows.to_dtype(DType::F32)?)
}

fn to_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| ckpt_err(path, e.to_string()))
}

/// Write safetensors to `path` atomically (a temporary file beside it, then a rename), so a
/// crash never leaves a half-written file under the final name; the file is 0644.
pub(crate) fn write_atomic(
    path: &Path,
    tensors: &BTreeMap<String, Tensor>,
    metadata: HashMap<String, String>,
) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_err(dir))?;
    safetensors::serialize_to_file(tensors, Some(metadata), tmp.path())
        .map_err(|e| ckpt_err(path, format!("cannot write: {e}")))?;
    // NamedTempFile is created 0600; a checkpoint is an ordinary, shareable file.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))
            .map_err(io_err(tmp.path()))?;
    }
    tmp.persist(path).map_err(|e| SpaeError::Io {
        path: path.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}
