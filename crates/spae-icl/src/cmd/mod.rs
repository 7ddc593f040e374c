//! One file per family of commands: each turns its flags into the library's configuration,
//! calls the library, and prints what it returns.

pub mod draw;
pub mod evals;
pub mod fewshot;
pub mod llm;
pub mod tokens;
pub mod vqa;
