//! The Frozen benchmark's JSON records (the `real_name_mi` files of Tsimpoukelli et al. 2021):
//! `image_1`, `caption_1`, `image_2`, `caption_2`, ..., `question_image`, `question`, `answer`.
//!
//! A file is a JSON list of records, or JSONL (one record per line). Unknown fields are ignored so
//! the published files read unchanged; a missing field is an error naming the record and field.

use std::io::{Read, Write};
use std::path::Path;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

use crate::episode::{Episode, Shot};
use crate::{PromptError, Result};

/// The query text of every record: the model continues "This is a" with the class name.
pub const QUESTION: &str = "This is a";

/// One record; captions kept verbatim. Written with its fields in the benchmark's order
/// (`image_1`, `caption_1`, ..., `question_image`, `question`, `answer`) whatever serde_json's
/// `preserve_order` feature says, since the map is serialised field by field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrozenRecord {
    /// (`image_k`, `caption_k`) for k = 1, 2, ...
    pub support: Vec<(String, String)>,
    pub question_image: String,
    pub question: String,
    pub answer: String,
}

impl Serialize for FrozenRecord {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2 * self.support.len() + 3))?;
        for (k, (image, caption)) in self.support.iter().enumerate() {
            map.serialize_entry(&format!("image_{}", k + 1), image)?;
            map.serialize_entry(&format!("caption_{}", k + 1), caption)?;
        }
        map.serialize_entry("question_image", &self.question_image)?;
        map.serialize_entry("question", &self.question)?;
        map.serialize_entry("answer", &self.answer)?;
        map.end()
    }
}

/// "This is a lion." -> "lion" (also "This is an owl."); any other caption loses only its
/// trailing period.
pub fn caption_label(caption: &str) -> String {
    let c = caption.trim();
    let c = c.strip_suffix('.').unwrap_or(c).trim_end();
    let lower = c.to_lowercase();
    for prefix in ["this is an ", "this is a "] {
        // ASCII prefix: byte offsets agree between `c` and its lowercase.
        if lower.starts_with(prefix) && c.is_char_boundary(prefix.len()) {
            return c[prefix.len()..].trim().to_string();
        }
    }
    c.to_string()
}

impl FrozenRecord {
    pub fn from_episode(episode: &Episode) -> Self {
        Self {
            support: episode
                .support
                .iter()
                .map(|s| (s.image.clone(), format!("{QUESTION} {}.", s.label)))
                .collect(),
            question_image: episode.query.image.clone(),
            question: QUESTION.to_string(),
            answer: episode.query.label.clone(),
        }
    }

    /// The episode this record describes; its classes are the support labels in order of
    /// first appearance (the answer appended if no support item carries it).
    pub fn to_episode(&self, induction: bool) -> Episode {
        let support: Vec<Shot> = self
            .support
            .iter()
            .map(|(image, caption)| Shot {
                image: image.clone(),
                label: caption_label(caption),
            })
            .collect();
        let mut classes: Vec<String> = Vec::new();
        for shot in &support {
            if !classes.contains(&shot.label) {
                classes.push(shot.label.clone());
            }
        }
        if !classes.contains(&self.answer) {
            classes.push(self.answer.clone());
        }
        Episode {
            classes,
            support,
            query: Shot {
                image: self.question_image.clone(),
                label: self.answer.clone(),
            },
            induction,
        }
    }

    fn from_json(record: usize, value: &Value) -> Result<Self> {
        let map = value.as_object().ok_or_else(|| PromptError::FieldType {
            record,
            field: "(record)".into(),
            expected: "a JSON object",
        })?;
        let field = |name: &str| -> Result<Option<String>> {
            match map.get(name) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                // Some files give images as numeric ids.
                Some(Value::Number(n)) => Ok(Some(n.to_string())),
                Some(_) => Err(PromptError::FieldType {
                    record,
                    field: name.to_string(),
                    expected: "a string",
                }),
            }
        };
        let required = |name: &str| -> Result<String> {
            field(name)?.ok_or_else(|| PromptError::MissingField {
                record,
                field: name.to_string(),
            })
        };
        let mut support = Vec::new();
        for k in 1.. {
            let Some(image) = field(&format!("image_{k}"))? else {
                break;
            };
            support.push((image, required(&format!("caption_{k}"))?));
        }
        if support.is_empty() {
            return Err(PromptError::MissingField {
                record,
                field: "image_1".into(),
            });
        }
        if map.contains_key(&format!("caption_{}", support.len() + 1)) {
            return Err(PromptError::MissingField {
                record,
                field: format!("image_{}", support.len() + 1),
            });
        }
        Ok(Self {
            support,
            question_image: required("question_image")?,
            question: required("question")?,
            answer: required("answer")?,
        })
    }
}

/// Records from a JSON list (`[...]`) or JSONL (one record per line, blank lines skipped).
pub fn read_frozen_reader(mut reader: impl Read) -> Result<Vec<FrozenRecord>> {
    let mut text = String::new();
    reader
        .read_to_string(&mut text)
        .map_err(|e| PromptError::Json {
            at: "input".into(),
            message: e.to_string(),
        })?;
    if text.trim_start().starts_with('[') {
        let values: Vec<Value> = serde_json::from_str(&text).map_err(|e| PromptError::Json {
            at: "list".into(),
            message: format!("invalid JSON: {e}"),
        })?;
        values
            .iter()
            .enumerate()
            .map(|(i, v)| FrozenRecord::from_json(i, v))
            .collect()
    } else {
        let mut records = Vec::new();
        for (line_no, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(line).map_err(|e| PromptError::Json {
                at: format!("line {}", line_no + 1),
                message: format!("invalid JSON: {e}"),
            })?;
            records.push(FrozenRecord::from_json(records.len(), &value)?);
        }
        Ok(records)
    }
}

/// [`read_frozen_reader`] on a file; errors name the path.
pub fn read_frozen(path: &Path) -> Result<Vec<FrozenRecord>> {
    let file = std::fs::File::open(path).map_err(|source| PromptError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    read_frozen_reader(std::io::BufReader::new(file)).map_err(|e| PromptError::InFile {
        path: path.to_path_buf(),
        source: Box::new(e),
    })
}

/// Records as one pretty-printed JSON list.
pub fn write_frozen_writer(mut writer: impl Write, records: &[FrozenRecord]) -> Result<()> {
    let io = |e: std::io::Error| PromptError::Json {
        at: "output".into(),
        message: e.to_string(),
    };
    serde_json::to_writer_pretty(&mut writer, records).map_err(|e| PromptError::Json {
        at: "output".into(),
        message: e.to_string(),
    })?;
    writer.write_all(b"\n").map_err(io)?;
    writer.flush().map_err(io)
}

/// [`write_frozen_writer`] to a file.
pub fn write_frozen(path: &Path, records: &[FrozenRecord]) -> Result<()> {
    let file = std::fs::File::create(path).map_err(|source| PromptError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    write_frozen_writer(std::io::BufWriter::new(file), records).map_err(|e| PromptError::InFile {
        path: path.to_path_buf(),
        source: Box::new(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_written_in_the_benchmarks_field_order() {
        let record = FrozenRecord {
            support: vec![
                ("lion/1.jpg".into(), "This is a lion.".into()),
                ("vase/7.jpg".into(), "This is a vase.".into()),
            ],
            question_image: "lion/9.jpg".into(),
            question: QUESTION.into(),
            answer: "lion".into(),
        };
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(
            json,
            r#"{"image_1":"lion/1.jpg","caption_1":"This is a lion.","image_2":"vase/7.jpg","caption_2":"This is a vase.","question_image":"lion/9.jpg","question":"This is a","answer":"lion"}"#
        );
    }

    #[test]
    fn captions_give_their_labels() {
        assert_eq!(caption_label("This is a lion."), "lion");
        assert_eq!(caption_label("this is an owl"), "owl");
        assert_eq!(caption_label("This is a ice cream. "), "ice cream");
        assert_eq!(caption_label("a dax."), "a dax");
        assert_eq!(caption_label("This is aé."), "This is aé");
        assert_eq!(caption_label(""), "");
    }
}
