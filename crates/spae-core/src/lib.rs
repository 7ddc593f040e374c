//! spae-core: the SPAE tokenizer (Yu et al., "SPAE: Semantic Pyramid AutoEncoder for
//! Multimodal Generation with Frozen LLMs", NeurIPS 2023, arXiv 2306.17842).
//!
//! Images become a pyramid of words from a frozen LLM's own vocabulary, and back:
//! [`Codebook`] (frozen LLM vocabulary), [`PyramidConfig`] (dilation subsampling),
//! [`SaqQuantizer`] (streaming average quantization), [`SpaeModel`] (encoder + decoder),
//! checkpoints. This crate knows nothing of LLMs or prompts.

pub mod checkpoint;
pub mod codebook;
mod error;
mod im2col;
pub mod imageio;
pub mod images;
pub mod judge;
pub mod metrics;
pub mod model;
pub mod patch;
pub mod pyramid;
pub mod quantizer;
pub mod scorer;
mod spae;
pub mod torch_pth;
pub mod train;

pub use codebook::{Codebook, CodebookInfo, Dictionary, VocabFilter, WordMarker};
pub(crate) use error::io_err;
pub use error::{Result, SpaeError};
pub use images::LabeledPixels;
pub use judge::{DigitJudge, JudgeConfig, JudgeTrainConfig};
pub use model::{DecoderInput, ModelConfig};
pub use pyramid::PyramidConfig;
pub use quantizer::{Quantized, QuantizerKind, SaqQuantizer};
pub use scorer::{CodebookScorer, ImageTextModel, SemanticScorer};
pub use spae::{FrozenInputs, SpaeModel, TokenLayer, TokenPyramid};
pub use train::{
    usage_loss, LossBreakdown, SemanticConfig, SemanticTargets, TrainConfig, Trainer, UsageConfig,
};
