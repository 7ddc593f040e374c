//! Resolving a vocabulary name into a frozen codebook; `fetch` and `vocab`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::Device;
use spae_assets::AssetCache;
use spae_core::{Codebook, VocabFilter};

use crate::cli::{FetchArgs, Format, VocabArgs, VocabSpec};

/// Where a vocabulary comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VocabSource {
    /// A catalog model, fetched into the asset cache.
    Catalog(String),
    Gguf(PathBuf),
    HfDir(PathBuf),
}

impl VocabSource {
    pub fn parse(s: &str) -> Result<Self> {
        if let Some(p) = s.strip_prefix("gguf:") {
            return Ok(Self::Gguf(p.into()));
        }
        if let Some(p) = s.strip_prefix("hf:") {
            return Ok(Self::HfDir(p.into()));
        }
        let name = s.strip_prefix("local:").unwrap_or(s);
        spae_assets::find(name)?;
        Ok(Self::Catalog(name.to_string()))
    }
}

impl VocabSpec {
    pub fn filter(&self) -> VocabFilter {
        VocabFilter {
            min_len: self.min_len,
            max_token_id: self.max_token_id,
            max_entries: self.max_entries,
            dedupe_case_insensitive: !self.keep_case_duplicates,
            include: self.include_words.clone(),
            ..VocabFilter::default()
        }
    }

    pub fn load(&self, device: &Device) -> Result<Codebook> {
        let filter = self.filter();
        let cb = match VocabSource::parse(&self.vocab)? {
            VocabSource::Catalog(name) => {
                let path = AssetCache::from_env().fetch_named(&name)?;
                Codebook::from_gguf(&path, &filter, device)?
            }
            VocabSource::Gguf(p) => Codebook::from_gguf(&p, &filter, device)?,
            VocabSource::HfDir(p) => Codebook::from_hf_dir(&p, &filter, device)?,
        };
        tracing::info!(
            entries = cb.len(),
            dim = cb.dim(),
            "codebook from {}",
            self.vocab
        );
        Ok(cb)
    }
}

pub fn fetch(args: FetchArgs) -> Result<()> {
    let cache = AssetCache::from_env();
    for name in &args.assets {
        let path = cache
            .fetch_named(name)
            .with_context(|| format!("fetching {name}"))?;
        println!("{name}\t{}", path.display());
    }
    Ok(())
}

pub fn report(args: VocabArgs) -> Result<()> {
    let cb = args.spec.load(&Device::Cpu)?;
    let sample: Vec<&str> = (0..cb.len().min(12)).map(|i| cb.word(i)).collect();
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::json!({
                "vocab": args.spec.vocab,
                "vocab_size": cb.info().vocab_size,
                "entries": cb.len(),
                "dim": cb.dim(),
                "marker": cb.info().marker,
                "filter": cb.info().filter,
                "first_words": sample,
            })
        ),
        Format::Text => {
            println!("vocab       {}", args.spec.vocab);
            println!("vocab size  {}", cb.info().vocab_size);
            println!("entries     {} (after the filter)", cb.len());
            println!("dim         {}", cb.dim());
            println!("first words {}", sample.join(" "));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vocab_names() {
        assert_eq!(
            VocabSource::parse("gemma3-270m").unwrap(),
            VocabSource::Catalog("gemma3-270m".into())
        );
        assert_eq!(
            VocabSource::parse("local:smollm2-135m").unwrap(),
            VocabSource::Catalog("smollm2-135m".into())
        );
        assert_eq!(
            VocabSource::parse("gguf:/m.gguf").unwrap(),
            VocabSource::Gguf("/m.gguf".into())
        );
        assert_eq!(
            VocabSource::parse("hf:/d").unwrap(),
            VocabSource::HfDir("/d".into())
        );
        assert!(VocabSource::parse("llama-9000").is_err());
    }
}
