//! `chat` and `serve`: a quick look at an LLM, and a local model over HTTP.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use llm_client::{GenerateParams, LanguageModel, LoadOptions, LocalModel, ModelSpec, Prompt};

use crate::cli::{ChatArgs, ServeArgs};

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
    let model = args.api.llm(&args.llm).load()?;
    let rt = spae_eval::util::runtime()?;
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

pub fn serve(args: ServeArgs) -> Result<()> {
    let spec = ModelSpec::parse(&args.llm).with_context(|| format!("--llm {}", args.llm))?;
    if !matches!(spec, ModelSpec::Local(_) | ModelSpec::Gguf(_)) {
        bail!(
            "--llm {}: serve takes a local model (local:NAME or gguf:PATH)",
            args.llm
        );
    }
    let model = LocalModel::load(&spec, &LoadOptions::default())
        .with_context(|| format!("--llm {}", args.llm))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], args.port));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr}"))?;
        tracing::info!("serving {} at http://{addr}/v1", model.name());
        llm_client::server::serve(listener, Arc::new(model))
            .await
            .context("serving")
    })
}
