//! Image slots: where a rendered prompt holds an image's words.
//!
//! A local model must read SPAE's image words as their exact token ids (each is one of the LLM's
//! own vocabulary entries, SPAE paper Sec. 3.1): tokenizing the words' text again could merge or
//! split them differently. So a template is rendered with a slot marker in place of each image,
//! and the caller splits the result into text segments (tokenized by the LLM's tokenizer) and
//! image segments (spliced in as ids, or as text for an API model).
//!
//! A marker is `U+E000 <index> U+E001`: private-use code points, which no template, class name
//! or LLM word contains.

use crate::{PromptError, Result};

const OPEN: char = '\u{E000}';
const CLOSE: char = '\u{E001}';

/// The marker standing for image `index` in a rendered prompt.
pub fn image_slot(index: usize) -> String {
    format!("{OPEN}{index}{CLOSE}")
}

/// A piece of a rendered prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment<'a> {
    Text(&'a str),
    /// The image passed as slot `index`.
    Image(usize),
}

/// Splits a rendered prompt at its image slots. Empty text between slots is dropped.
pub fn split_slots(rendered: &str) -> Result<Vec<Segment<'_>>> {
    let mut out = Vec::new();
    let mut rest = rendered;
    while let Some(open) = rest.find(OPEN) {
        if open > 0 {
            out.push(Segment::Text(&rest[..open]));
        }
        let after = &rest[open + OPEN.len_utf8()..];
        let close = after
            .find(CLOSE)
            .ok_or_else(|| PromptError::Slot("an image slot is not closed".into()))?;
        let index = after[..close]
            .parse::<usize>()
            .map_err(|_| PromptError::Slot(format!("bad image slot {:?}", &after[..close])))?;
        out.push(Segment::Image(index));
        rest = &after[close + CLOSE.len_utf8()..];
    }
    if rest.contains(CLOSE) {
        return Err(PromptError::Slot(
            "an image slot closes without opening".into(),
        ));
    }
    if !rest.is_empty() {
        out.push(Segment::Text(rest));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_text_and_images_in_order() {
        let s = format!(
            "Answer.\n{} This is a cat.\n{} This is a",
            image_slot(0),
            image_slot(12)
        );
        assert_eq!(
            split_slots(&s).unwrap(),
            vec![
                Segment::Text("Answer.\n"),
                Segment::Image(0),
                Segment::Text(" This is a cat.\n"),
                Segment::Image(12),
                Segment::Text(" This is a"),
            ]
        );
    }

    #[test]
    fn adjacent_slots_and_plain_text() {
        let s = format!("{}{}", image_slot(1), image_slot(2));
        assert_eq!(
            split_slots(&s).unwrap(),
            vec![Segment::Image(1), Segment::Image(2)]
        );
        assert_eq!(split_slots("plain").unwrap(), vec![Segment::Text("plain")]);
    }

    #[test]
    fn broken_slots_are_errors() {
        assert!(split_slots("a \u{E000}3 b").is_err());
        assert!(split_slots("a \u{E000}x\u{E001}").is_err());
        assert!(split_slots("a 3\u{E001}").is_err());
    }
}
