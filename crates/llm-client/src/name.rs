//! Model names, parsed in one place: `local:gemma3-270m`, `gguf:/path/model.gguf`,
//! `openai:gpt-4o-mini`, `openai-compatible:http://host:port/v1#model`, `gemini:gemini-1.5-flash`.

use std::fmt;
use std::path::PathBuf;

use crate::error::{LlmError, Result};

/// A local model this project knows by name: its GGUF file comes from `spae-assets`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KnownModel {
    Gemma3_270m,
    SmolLm2_135m,
}

impl KnownModel {
    pub const ALL: [KnownModel; 2] = [KnownModel::Gemma3_270m, KnownModel::SmolLm2_135m];

    /// The name users type after `local:`, which is also the `spae-assets` catalog name.
    pub fn asset_name(self) -> &'static str {
        match self {
            KnownModel::Gemma3_270m => "gemma3-270m",
            KnownModel::SmolLm2_135m => "smollm2-135m",
        }
    }
}

/// A parsed model name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSpec {
    /// `local:NAME`: a model from the asset catalog, run in-process.
    Local(KnownModel),
    /// `gguf:PATH`: any GGUF file of a supported architecture, run in-process.
    Gguf(PathBuf),
    /// `openai:MODEL`.
    OpenAi { model: String },
    /// `openai-compatible:BASE_URL#MODEL`, e.g. a llama.cpp or vLLM server.
    OpenAiCompatible { base_url: String, model: String },
    /// `gemini:MODEL`.
    Gemini { model: String },
}

impl ModelSpec {
    pub fn parse(name: &str) -> Result<Self> {
        let bad = |reason: &str| LlmError::BadModelName {
            name: name.to_string(),
            reason: reason.to_string(),
        };
        let (scheme, rest) = name.split_once(':').ok_or_else(|| {
            bad("expected SCHEME:NAME with scheme local, gguf, openai, openai-compatible or gemini")
        })?;
        if rest.is_empty() {
            return Err(bad("nothing after the scheme"));
        }
        match scheme {
            "local" => KnownModel::ALL
                .into_iter()
                .find(|m| m.asset_name() == rest)
                .map(ModelSpec::Local)
                .ok_or_else(|| {
                    let known: Vec<_> = KnownModel::ALL.iter().map(|m| m.asset_name()).collect();
                    bad(&format!("unknown local model; known: {}", known.join(", ")))
                }),
            "gguf" => Ok(ModelSpec::Gguf(PathBuf::from(rest))),
            "openai" => Ok(ModelSpec::OpenAi {
                model: rest.to_string(),
            }),
            "openai-compatible" => {
                let (base_url, model) = rest
                    .rsplit_once('#')
                    .ok_or_else(|| bad("expected openai-compatible:BASE_URL#MODEL"))?;
                if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
                    return Err(bad("the base URL must start with http:// or https://"));
                }
                if model.is_empty() {
                    return Err(bad("no model after '#'"));
                }
                Ok(ModelSpec::OpenAiCompatible {
                    base_url: base_url.trim_end_matches('/').to_string(),
                    model: model.to_string(),
                })
            }
            "gemini" => Ok(ModelSpec::Gemini {
                model: rest.to_string(),
            }),
            other => Err(bad(&format!(
                "unknown scheme {other:?}; expected local, gguf, openai, openai-compatible or gemini"
            ))),
        }
    }
}

impl std::str::FromStr for ModelSpec {
    type Err = LlmError;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// Prints the name back in the form `parse` reads.
impl fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSpec::Local(m) => write!(f, "local:{}", m.asset_name()),
            ModelSpec::Gguf(p) => write!(f, "gguf:{}", p.display()),
            ModelSpec::OpenAi { model } => write!(f, "openai:{model}"),
            ModelSpec::OpenAiCompatible { base_url, model } => {
                write!(f, "openai-compatible:{base_url}#{model}")
            }
            ModelSpec::Gemini { model } => write!(f, "gemini:{model}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form_and_prints_it_back() {
        for name in [
            "local:gemma3-270m",
            "local:smollm2-135m",
            "gguf:/models/x.gguf",
            "openai:gpt-4o-mini",
            "openai-compatible:http://127.0.0.1:8080/v1#qwen",
            "gemini:gemini-1.5-flash",
        ] {
            let spec = ModelSpec::parse(name).unwrap();
            assert_eq!(spec.to_string(), name);
        }
        assert_eq!(
            ModelSpec::parse("local:gemma3-270m").unwrap(),
            ModelSpec::Local(KnownModel::Gemma3_270m)
        );
        assert_eq!(
            ModelSpec::parse("openai-compatible:http://h:1/v1/#m").unwrap(),
            ModelSpec::OpenAiCompatible {
                base_url: "http://h:1/v1".into(),
                model: "m".into()
            }
        );
    }

    #[test]
    fn rejects_malformed_names() {
        for name in [
            "gemma3-270m",
            "local:",
            "local:gpt2",
            "ollama:llama3",
            "openai-compatible:http://h:1/v1",
            "openai-compatible:h:1/v1#m",
            "openai-compatible:http://h:1/v1#",
        ] {
            assert!(
                matches!(ModelSpec::parse(name), Err(LlmError::BadModelName { .. })),
                "{name} parsed"
            );
        }
    }
}
