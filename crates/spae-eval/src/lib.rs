//! spae-eval: what spae-icl measures, as a library. Tasks are data (TOML files, [`task`]);
//! few-shot classification ([`fewshot`]) and the paper's Table 1 grid ([`table1`]);
//! tokenizer quality per depth ([`tokenizer_eval`]); training runs ([`train`]) and ablations
//! ([`ablations`]); figures ([`plot`]). Every long job writes its results as it goes into one
//! kind of result folder ([`store`]) and resumes from it.
//!
//! Configuration types are plain serde structs: the `spae-icl` binary fills them from its
//! flags, and a program can fill them itself.

pub mod ablations;
pub mod compare;
pub mod error;
pub mod fewshot;
pub mod llm;
pub mod naming;
pub mod plot;
pub mod progress;
pub mod reader;
pub mod scorer;
pub mod store;
pub mod table1;
pub mod task;
pub mod tokenizer;
pub mod tokenizer_eval;
pub mod train;
pub mod util;
// (modules added by the generation and VQA work go below this line)
pub mod generate;
pub mod image2image;
pub mod vqa;

pub use error::{Context, EvalError, Result};
pub use fewshot::{RunConfig, Scoring, WordSource};
pub use llm::LlmConfig;
pub use task::{TaskKind, TaskSpec};
pub use tokenizer::{BuiltIn, CheckpointRef};
