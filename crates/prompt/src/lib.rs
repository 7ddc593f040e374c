//! Pyramid-layered prompts from Tera templates, and parsing of what an LLM writes back.
//!
//! Templates live in `prompts/` (one file per task) and are rendered strictly: a variable
//! the template uses but the context lacks is an error, never an empty string.

use std::path::{Path, PathBuf};

use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("template {name}: {message}")]
    Template { name: String, message: String },
}

pub type Result<T> = std::result::Result<T, PromptError>;

/// Tera's error chain in one line: the top error alone rarely says which variable failed.
fn chain(err: &tera::Error) -> String {
    let mut parts = vec![err.to_string()];
    let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(err);
    while let Some(e) = cur {
        parts.push(e.to_string());
        cur = e.source();
    }
    parts.join(": ")
}

/// A set of named templates (`few_shot_classification`, ...).
pub struct Templates {
    tera: tera::Tera,
}

impl Templates {
    /// Every `*.tera` file in `dir`, named by its file stem.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let mut tera = tera::Tera::default();
        tera.autoescape_on(vec![]);
        let entries = std::fs::read_dir(dir).map_err(|source| PromptError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "tera") {
                let name = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let text = std::fs::read_to_string(&path).map_err(|source| PromptError::Io {
                    path: path.clone(),
                    source,
                })?;
                tera.add_raw_template(&name, &text)
                    .map_err(|e| PromptError::Template {
                        name: path.display().to_string(),
                        message: chain(&e),
                    })?;
            }
        }
        Ok(Self { tera })
    }

    /// Render template `name` from a serialisable context.
    pub fn render(&self, name: &str, context: &impl Serialize) -> Result<String> {
        let ctx = tera::Context::from_serialize(context).map_err(|e| PromptError::Template {
            name: name.to_string(),
            message: chain(&e),
        })?;
        self.tera
            .render(name, &ctx)
            .map_err(|e| PromptError::Template {
                name: name.to_string(),
                message: chain(&e),
            })
    }
}

/// The answer in an LLM's continuation: the text before the first period or newline,
/// trimmed and case-folded (the Frozen protocol's open-ended scoring).
pub fn parse_answer(continuation: &str) -> String {
    let end = continuation.find(['.', '\n']).unwrap_or(continuation.len());
    continuation[..end].trim().to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Item {
        image: String,
        label: String,
    }

    #[derive(Serialize)]
    struct Episode {
        induction: Option<String>,
        support: Vec<Item>,
        query: String,
    }

    fn templates() -> Templates {
        Templates::from_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../prompts")).unwrap()
    }

    #[test]
    fn renders_a_two_way_one_shot_episode() {
        let ep = Episode {
            induction: Some("Answer with lion or vase.".into()),
            support: vec![
                Item {
                    image: "mane savanna".into(),
                    label: "lion".into(),
                },
                Item {
                    image: "clay flower".into(),
                    label: "vase".into(),
                },
            ],
            query: "roar grass".into(),
        };
        let got = templates().render("few_shot_classification", &ep).unwrap();
        assert_eq!(
            got,
            "Answer with lion or vase.\nmane savanna This is a lion.\nclay flower This is a vase.\nroar grass This is a"
        );
        let no_induction = Episode {
            induction: None,
            ..ep
        };
        let got = templates()
            .render("few_shot_classification", &no_induction)
            .unwrap();
        assert!(got.starts_with("mane savanna This is a lion."), "{got}");
    }

    #[test]
    fn a_missing_variable_is_an_error() {
        #[derive(Serialize)]
        struct Partial {
            induction: Option<String>,
            support: Vec<Item>,
        }
        let err = templates()
            .render(
                "few_shot_classification",
                &Partial {
                    induction: None,
                    support: vec![],
                },
            )
            .unwrap_err();
        assert!(err.to_string().contains("query"), "{err}");
    }

    #[test]
    fn parses_answers() {
        assert_eq!(parse_answer(" lion."), "lion");
        assert_eq!(parse_answer(" Lion. This is a vase."), "lion");
        assert_eq!(parse_answer(" vase\nroar"), "vase");
        assert_eq!(parse_answer(" big cat"), "big cat");
        assert_eq!(parse_answer(""), "");
        assert_eq!(parse_answer("..."), "");
    }
}
