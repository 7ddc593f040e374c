//! A GGUF file opened for loading: metadata getters and tensor reads whose errors name the
//! file and the key or tensor.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::{gguf_file, QTensor};
use candle_core::{Device, Tensor};

use super::kernels::{GatedActivation, QuantMatrix};
use super::nn::{GatedUp, Linear};
use crate::error::{LlmError, Result};

pub struct Gguf {
    pub path: PathBuf,
    pub content: gguf_file::Content,
    reader: BufReader<File>,
    device: Device,
}

impl Gguf {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|source| LlmError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut reader = BufReader::new(file);
        let content = gguf_file::Content::read(&mut reader).map_err(|e| LlmError::Gguf {
            path: path.to_path_buf(),
            what: format!("not a readable GGUF file: {e}"),
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            content,
            reader,
            device: Device::Cpu,
        })
    }

    pub fn error(&self, what: impl Into<String>) -> LlmError {
        LlmError::Gguf {
            path: self.path.clone(),
            what: what.into(),
        }
    }

    fn value(&self, key: &str) -> Result<&gguf_file::Value> {
        self.content
            .metadata
            .get(key)
            .ok_or_else(|| self.error(format!("missing metadata {key}")))
    }

    pub fn string(&self, key: &str) -> Result<String> {
        self.value(key)?
            .to_string()
            .cloned()
            .map_err(|e| self.error(format!("metadata {key}: {e}")))
    }

    pub fn usize(&self, key: &str) -> Result<usize> {
        let v = self.value(key)?;
        // Writers differ on the integer width; accept any unsigned one.
        v.to_u32()
            .map(|x| x as usize)
            .or_else(|_| v.to_u64().map(|x| x as usize))
            .map_err(|e| self.error(format!("metadata {key}: {e}")))
    }

    pub fn f32(&self, key: &str) -> Result<f32> {
        self.value(key)?
            .to_f32()
            .map_err(|e| self.error(format!("metadata {key}: {e}")))
    }

    pub fn optional_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.content.metadata.get(key) {
            None => Ok(None),
            Some(_) => self.usize(key).map(Some),
        }
    }

    pub fn optional_f32(&self, key: &str) -> Result<Option<f32>> {
        match self.content.metadata.get(key) {
            None => Ok(None),
            Some(_) => self.f32(key).map(Some),
        }
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// The stored tensor, checked against the expected shape (GGUF order reversed, i.e.
    /// `(out, in)` for a linear layer).
    pub fn qtensor(&mut self, name: &str, shape: &[usize]) -> Result<QTensor> {
        if !self.has_tensor(name) {
            return Err(self.error(format!("missing tensor {name}")));
        }
        let t = self
            .content
            .tensor(&mut self.reader, name, &self.device)
            .map_err(|e| LlmError::Gguf {
                path: self.path.clone(),
                what: format!("tensor {name}: {e}"),
            })?;
        if t.shape().dims() != shape {
            return Err(self.error(format!(
                "tensor {name} has shape {:?}, expected {shape:?}",
                t.shape().dims()
            )));
        }
        Ok(t)
    }

    /// A linear layer's weight `(out, in)`, repacked for the int8 kernels.
    pub fn quant_matrix(&mut self, name: &str, shape: &[usize]) -> Result<Arc<QuantMatrix>> {
        let t = self.qtensor(name, shape)?;
        QuantMatrix::from_qtensor(&t)
            .map(Arc::new)
            .map_err(|e| self.error(format!("tensor {name}: {e}")))
    }

    /// A feed-forward block's gate and up projections `(out, in)` each, stacked.
    pub fn gated_up(
        &mut self,
        gate: &str,
        up: &str,
        shape: &[usize],
        act: GatedActivation,
    ) -> Result<GatedUp> {
        let (g, u) = (
            self.quant_matrix(gate, shape)?,
            self.quant_matrix(up, shape)?,
        );
        GatedUp::new(&g, &u, act)
    }

    /// A linear layer, as [`Gguf::quant_matrix`].
    pub fn linear(&mut self, name: &str, shape: &[usize]) -> Result<Linear> {
        Ok(Linear::new(self.quant_matrix(name, shape)?))
    }

    /// A small tensor (a norm weight), dequantized to f32.
    pub fn f32_tensor(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.qtensor(name, shape)?;
        Ok(t.dequantize(&self.device)?)
    }
}
