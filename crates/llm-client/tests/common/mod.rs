//! Models shared by the tests of one test binary: each loads once (about a second).

#![allow(dead_code)]

use std::sync::OnceLock;

use llm_client::{KnownModel, LoadOptions, LocalModel, ModelSpec};

pub fn load(model: KnownModel, reuse_prefix: bool) -> LocalModel {
    let options = LoadOptions {
        max_context: 2048,
        reuse_prefix,
        ..LoadOptions::default()
    };
    match LocalModel::load(&ModelSpec::Local(model), &options) {
        Ok(m) => m,
        Err(e) => panic!("loading {}: {e}", model.asset_name()),
    }
}

pub fn gemma() -> &'static LocalModel {
    static MODEL: OnceLock<LocalModel> = OnceLock::new();
    MODEL.get_or_init(|| load(KnownModel::Gemma3_270m, true))
}

pub fn smollm() -> &'static LocalModel {
    static MODEL: OnceLock<LocalModel> = OnceLock::new();
    MODEL.get_or_init(|| load(KnownModel::SmolLm2_135m, true))
}

/// Largest |a - b| relative to the largest |b| of the row.
pub fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1e-6f32, |m, x| m.max(x.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}
