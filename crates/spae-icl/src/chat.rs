//! `spae-icl chat`: a quick look at what an LLM continues a prompt with.

use anyhow::{Context, Result};
use llm_client::{GenerateParams, Prompt};

use crate::cli::ChatArgs;

pub fn chat(args: ChatArgs) -> Result<()> {
    let params = GenerateParams {
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        seed: args.seed,
        stop: args.stop.clone(),
        allowed_tokens: None,
    };
    params.validate()?;
    let model = crate::llm::load(&args.llm, &args.api)?;
    // Local generation is CPU-bound and runs on this thread; API backends need a runtime.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let completion = rt.block_on(model.generate(&Prompt::Text(args.prompt.clone()), &params))?;
    println!("{}", completion.text);
    let usage = model.usage();
    tracing::info!(
        tokens = completion.tokens.len(),
        finish = ?completion.finish_reason,
        prompt_tokens = usage.prompt_tokens,
        completion_tokens = usage.completion_tokens,
        "{}",
        model.name()
    );
    Ok(())
}
