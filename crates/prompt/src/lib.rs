//! Pyramid-layered prompts from Tera templates, and parsing of what an LLM writes back.
//!
//! Templates live in `prompts/` (one file per task) and are rendered strictly: a variable
//! the template uses but the context lacks is an error, never an empty string.
//!
//! Few-shot classification follows the protocol of Frozen (Tsimpoukelli et al. 2021),
//! "Real-Name mini-ImageNet" (SPAE paper, Sec. 4.1 and Table 1): [`episode`] samples episodes,
//! [`frozen`] reads and writes the benchmark's JSON records, [`context`] turns an episode into
//! the typed context of `few_shot_classification.tera`, and [`score`] grades what the model
//! answers.

use std::path::{Path, PathBuf};

use serde::Serialize;

pub mod context;
pub mod episode;
pub mod frozen;
pub mod score;
pub mod slots;
pub mod words;

pub use context::{
    induction_line, CaptionContext, CaptionItem, FewShotContext, GenerationContext,
    GenerationExample, ImagePair, ImageToImageContext, SupportItem, VqaContext, VqaItem,
};
pub use episode::{sample_episodes, Episode, EpisodeConfig, Pool, Shot};
pub use frozen::{
    read_frozen, read_frozen_reader, write_frozen, write_frozen_writer, FrozenRecord,
};
pub use score::{accuracy_with_interval, calibrate, constrained_choice, exact_match};
pub use slots::{image_slot, split_slots, Segment};
pub use words::{MappedWords, WordIndex};

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
    #[error("{path}: {source}")]
    InFile {
        path: PathBuf,
        #[source]
        source: Box<PromptError>,
    },
    #[error("episode config: {0}")]
    Config(String),
    #[error("item {item}: label {label} has no class name ({classes} class names)")]
    LabelOutOfRange {
        item: usize,
        label: u32,
        classes: usize,
    },
    #[error("class {class}: {have} items, need {need} ({shots} shots + 1 query)")]
    TooFewItems {
        class: String,
        have: usize,
        need: usize,
        shots: usize,
    },
    #[error("{have} classes have items, a {way}-way episode needs {way}")]
    TooFewClasses { have: usize, way: usize },
    /// Reading or writing a stream of records; `at` is "line 3", "list", "input" or "output".
    #[error("{at}: {message}")]
    Json { at: String, message: String },
    #[error("record {record}: missing field {field}")]
    MissingField { record: usize, field: String },
    #[error("record {record}: field {field} is not {expected}")]
    FieldType {
        record: usize,
        field: String,
        expected: &'static str,
    },
    #[error("episode {episode}: {message}")]
    BadEpisode { episode: usize, message: String },
    #[error("no class scores to choose from")]
    EmptyScores,
    #[error("{scores} class scores but {content_free} content-free scores")]
    LengthMismatch { scores: usize, content_free: usize },
    #[error("template {name}: no such template (have: {have})")]
    NoTemplate { name: String, have: String },
    #[error("rendered prompt: {0}")]
    Slot(String),
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

/// The templates of `prompts/`, compiled in so the binary runs from any directory.
const BUILTIN: &[(&str, &str)] = &[
    (
        "few_shot_classification",
        include_str!("../../../prompts/few_shot_classification.tera"),
    ),
    (
        "generation",
        include_str!("../../../prompts/generation.tera"),
    ),
    (
        "captioning",
        include_str!("../../../prompts/captioning.tera"),
    ),
    ("vqa", include_str!("../../../prompts/vqa.tera")),
    (
        "image_to_image",
        include_str!("../../../prompts/image_to_image.tera"),
    ),
];

/// A set of named templates (`few_shot_classification`, ...).
pub struct Templates {
    tera: tera::Tera,
    /// Template text by name, kept to hash what produced a result.
    sources: std::collections::BTreeMap<String, String>,
}

impl Templates {
    /// The templates shipped in `prompts/`.
    pub fn builtin() -> Result<Self> {
        let mut t = Self::empty();
        for (name, text) in BUILTIN {
            t.add(name, text, name)?;
        }
        Ok(t)
    }

    /// The shipped templates, each replaced by a `NAME.tera` in `dir` where one exists
    /// (`--prompts DIR`); files with new names are added.
    pub fn with_overrides(dir: &Path) -> Result<Self> {
        let mut t = Self::builtin()?;
        t.add_dir(dir)?;
        Ok(t)
    }

    /// Every `*.tera` file in `dir`, named by its file stem.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let mut t = Self::empty();
        t.add_dir(dir)?;
        Ok(t)
    }

    /// The text of template `name`.
    pub fn source(&self, name: &str) -> Result<&str> {
        self.sources
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| PromptError::NoTemplate {
                name: name.to_string(),
                have: self.sources.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }

    fn empty() -> Self {
        let mut tera = tera::Tera::default();
        tera.autoescape_on(vec![]);
        Self {
            tera,
            sources: Default::default(),
        }
    }

    fn add(&mut self, name: &str, text: &str, shown_as: &str) -> Result<()> {
        self.tera
            .add_raw_template(name, text)
            .map_err(|e| PromptError::Template {
                name: shown_as.to_string(),
                message: chain(&e),
            })?;
        self.sources.insert(name.to_string(), text.to_string());
        Ok(())
    }

    fn add_dir(&mut self, dir: &Path) -> Result<()> {
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
                self.add(&name, &text, &path.display().to_string())?;
            }
        }
        Ok(())
    }

    /// Render template `name` from a serialisable context.
    pub fn render(&self, name: &str, context: &impl Serialize) -> Result<String> {
        self.source(name)?;
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

    type Item = SupportItem;

    fn templates() -> Templates {
        Templates::from_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../prompts")).unwrap()
    }

    #[test]
    fn renders_a_two_way_one_shot_episode() {
        let ep = FewShotContext {
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
        let no_induction = FewShotContext {
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

#[cfg(test)]
mod builtin_tests {
    use super::*;

    #[test]
    fn builtin_templates_equal_the_files_and_a_directory_overrides_them() {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../prompts");
        let builtin = Templates::builtin().unwrap();
        let files = Templates::from_dir(&shipped).unwrap();
        let name = "few_shot_classification";
        assert_eq!(builtin.source(name).unwrap(), files.source(name).unwrap());

        let dir = std::env::temp_dir().join(format!("spae-prompts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.tera")), "Q: {{ query }}\nA:").unwrap();
        let t = Templates::with_overrides(&dir).unwrap();
        let ctx = FewShotContext {
            induction: None,
            support: vec![],
            query: "words".into(),
        };
        assert_eq!(t.render(name, &ctx).unwrap(), "Q: words\nA:");
        let err = t.render("nope", &ctx).unwrap_err().to_string();
        assert!(err.contains("nope") && err.contains(name), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
