//! The typed context of `few_shot_classification.tera`, built from an [`Episode`].

use serde::Serialize;

use crate::episode::Episode;

/// One support line: "<image words> This is a <label>."
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SupportItem {
    /// The image's words (its first layers of SPAE tokens, as text).
    pub image: String,
    pub label: String,
}

/// What `few_shot_classification.tera` renders: an optional induction line, the support
/// lines, and the query's words followed by "This is a".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FewShotContext {
    pub induction: Option<String>,
    pub support: Vec<SupportItem>,
    pub query: String,
}

/// One in-context example of `generation.tera`: "<label>:<image words>".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GenerationExample {
    pub label: String,
    pub image: String,
}

/// What `generation.tera` renders: labelled examples, then the label to draw and the words
/// written so far (progressive decoding writes one pyramid layer per step).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GenerationContext {
    pub examples: Vec<GenerationExample>,
    pub label: String,
    pub prefix: String,
}

/// One captioned support image of `captioning.tera`: "<image words> Caption: <caption>."
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaptionItem {
    pub image: String,
    pub caption: String,
}

/// What `captioning.tera` renders: captioned images, then the query's words and "Caption:".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaptionContext {
    pub support: Vec<CaptionItem>,
    pub query: String,
}

/// One answered question of `vqa.tera`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VqaItem {
    pub image: String,
    pub question: String,
    pub answer: String,
}

/// What `vqa.tera` renders: answered questions about images, then the query image's words and
/// its question.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VqaContext {
    pub support: Vec<VqaItem>,
    pub query: String,
    pub question: String,
}

/// One corrupted -> clean pair of `image_to_image.tera` (denoise, inpaint, deblur).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImagePair {
    pub input: String,
    pub output: String,
}

/// What `image_to_image.tera` renders: pairs ordered from noisier to cleaner (progressive
/// in-context denoising, SPAE paper Sec. 3.3), then the corrupted query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageToImageContext {
    pub pairs: Vec<ImagePair>,
    pub query: String,
    /// The output's words written so far (progressive decoding), empty at first. Outputs
    /// follow "->" directly: image words carry their own leading space.
    pub prefix: String,
}

/// The task-induction line of Frozen: "Answer with lion or vase." for two classes,
/// "Answer with a, b, c, d or e." for five, class names in the order given.
pub fn induction_line(classes: &[String]) -> String {
    match classes {
        [] => "Answer.".to_string(),
        [only] => format!("Answer with {only}."),
        [init @ .., last] => format!("Answer with {} or {last}.", init.join(", ")),
    }
}

impl FewShotContext {
    /// `image_words(image)` turns an episode's image (path or id) into the words the LLM reads.
    pub fn from_episode(episode: &Episode, mut image_words: impl FnMut(&str) -> String) -> Self {
        Self {
            induction: episode.induction.then(|| induction_line(&episode.classes)),
            support: episode
                .support
                .iter()
                .map(|shot| SupportItem {
                    image: image_words(&shot.image),
                    label: shot.label.clone(),
                })
                .collect(),
            query: image_words(&episode.query.image),
        }
    }

    /// The same prompt with the query's words replaced by `content_free` (e.g. "N/A"), for
    /// calibration (Zhao et al. 2021, "Calibrate Before Use").
    pub fn with_content_free_query(&self, content_free: &str) -> Self {
        Self {
            query: content_free.to_string(),
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn induction_lines_list_the_classes_in_order() {
        assert_eq!(
            induction_line(&s(&["lion", "vase"])),
            "Answer with lion or vase."
        );
        assert_eq!(
            induction_line(&s(&["a", "b", "c", "d", "e"])),
            "Answer with a, b, c, d or e."
        );
    }
}
