//! A tokenizer, an LLM and the prompt templates, loaded once: what every task that puts image
//! words in front of a frozen LLM starts from (generation, image to image, captioning, VQA).

use std::path::Path;

use candle_core::Device;
use llm_client::{LanguageModel, Prompt};
use prompt::Templates;
use serde::Serialize;
use spae_core::SpaeModel;

use crate::error::{Context, Result};
use crate::fewshot::assemble;
use crate::fewshot::words::ImageWords;
use crate::llm::{check_vocabulary, LlmConfig, PromptForm};
use crate::tokenizer::CheckpointRef;

pub struct Reader {
    pub spae: SpaeModel,
    /// How the checkpoint is named in messages and result files.
    pub checkpoint: String,
    pub llm: Box<dyn LanguageModel>,
    pub templates: Templates,
    /// Token ids for a local model (its codebook checked against the model's vocabulary),
    /// text for an API model.
    pub form: PromptForm,
    rt: tokio::runtime::Runtime,
}

impl Reader {
    /// The tokenizer `checkpoint`, the LLM `llm` behind its response cache, and the built-in
    /// templates with those of `prompts` replacing them.
    pub fn load(
        checkpoint: &CheckpointRef,
        llm: &LlmConfig,
        prompts: Option<&Path>,
    ) -> Result<Self> {
        let (spae, checkpoint) = checkpoint.load(&Device::Cpu)?;
        let templates = match prompts {
            Some(dir) => Templates::with_overrides(dir)?,
            None => Templates::builtin()?,
        };
        let form = PromptForm::for_llm(llm, false)?;
        let llm = llm.load()?;
        if form == PromptForm::Tokens {
            check_vocabulary(llm.as_ref(), spae.codebook())?;
        }
        Ok(Self {
            spae,
            checkpoint,
            llm,
            templates,
            form,
            rt: crate::util::runtime()?,
        })
    }

    /// Run one LLM call to completion.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// `template` rendered with `ctx`, its image slots filled from `slots`, as the LLM reads it.
    pub fn prompt(
        &self,
        template: &str,
        ctx: &impl Serialize,
        slots: &[&ImageWords],
    ) -> Result<Prompt> {
        let rendered = self.templates.render(template, ctx)?;
        assemble(&rendered, slots, self.form, self.llm.as_ref())
    }

    /// `layers`, checked against the checkpoint's pyramid.
    pub fn depth(&self, layers: usize) -> Result<usize> {
        self.spae
            .config()
            .pyramid
            .check_depth(layers)
            .with_context(|| format!("--layers {layers}"))?;
        Ok(layers)
    }
}
