//! Loading an LLM from the CLI's flags (behind the response cache), and `spae-icl serve`.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use llm_client::{
    ApiOptions, CachedModel, LanguageModel, LoadOptions, LocalModel, ModelSpec, ResponseCache,
};

use crate::cli::{ApiArgs, ServeArgs};

/// The model `name`, with answers cached unless `--no-cache`.
pub fn load(name: &str, args: &ApiArgs) -> Result<Box<dyn LanguageModel>> {
    let spec = ModelSpec::parse(name).with_context(|| format!("--llm {name}"))?;
    let options = LoadOptions {
        api: ApiOptions {
            api_key_env: args.api_key_env.clone(),
            requests_per_minute: args.requests_per_minute,
            ..ApiOptions::default()
        },
        ..LoadOptions::default()
    };
    let model = llm_client::load_spec(&spec, &options).with_context(|| format!("--llm {name}"))?;
    if args.no_cache {
        return Ok(model);
    }
    let path = args
        .cache
        .clone()
        .unwrap_or_else(ResponseCache::default_path);
    let cache = ResponseCache::open(&path)?;
    tracing::debug!(cache = %path.display(), "response cache");
    Ok(Box::new(CachedModel::new(model, Arc::new(cache))))
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
