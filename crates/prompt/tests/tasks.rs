//! The task templates other than few-shot classification render their typed contexts exactly.

use prompt::{
    CaptionContext, CaptionItem, GenerationContext, GenerationExample, ImagePair,
    ImageToImageContext, Templates, VqaContext, VqaItem,
};

#[test]
fn every_shipped_template_renders_its_context() {
    let t = Templates::builtin().unwrap();
    let caption = CaptionContext {
        support: vec![CaptionItem {
            image: "blue round".into(),
            caption: "a blue circle".into(),
        }],
        query: "red corner".into(),
    };
    assert_eq!(
        t.render("captioning", &caption).unwrap(),
        "blue round Caption: a blue circle.\nred corner Caption:"
    );
    let vqa = VqaContext {
        support: vec![VqaItem {
            image: "blue round".into(),
            question: "What color is the shape?".into(),
            answer: "blue".into(),
        }],
        query: "red corner".into(),
        question: "What shape is this?".into(),
    };
    assert_eq!(
        t.render("vqa", &vqa).unwrap(),
        "blue round Question: What color is the shape? Answer: blue.\n\
         red corner Question: What shape is this? Answer:"
    );
    let i2i = ImageToImageContext {
        pairs: vec![
            ImagePair {
                input: "noise noise".into(),
                output: " seven stroke".into(),
            },
            ImagePair {
                input: "seven noise".into(),
                output: " seven line".into(),
            },
        ],
        query: "three noise".into(),
        prefix: " three".into(),
    };
    assert_eq!(
        t.render("image_to_image", &i2i).unwrap(),
        "noise noise -> seven stroke\nseven noise -> seven line\nthree noise -> three"
    );
    let generation = GenerationContext {
        examples: vec![GenerationExample {
            label: "seven".into(),
            image: " seven nine".into(),
        }],
        label: "three".into(),
        prefix: " third".into(),
    };
    assert_eq!(
        t.render("generation", &generation).unwrap(),
        "seven: seven nine\nthree: third"
    );
    // Strict rendering: a context missing a variable is an error naming the template.
    let err = t.render("vqa", &caption).unwrap_err().to_string();
    assert!(err.contains("vqa"), "{err}");
}
