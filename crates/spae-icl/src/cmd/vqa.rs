//! `caption`, `vqa`, `eval-vqa`: a frozen LLM describes images and answers questions about
//! them in context (paper Sec. 4.2).

use anyhow::Result;
use spae_eval::vqa::{self, EvalVqaConfig, VqaCommonConfig, VqaTask};
use spae_eval::TaskSpec;

use crate::cli::{CaptionArgs, EvalVqaArgs, VqaArgs, VqaCommon};

impl VqaCommon {
    /// The flags over `base` (the task's settings, or the defaults).
    fn config(&self, base: VqaCommonConfig) -> VqaCommonConfig {
        VqaCommonConfig {
            checkpoint: self.checkpoint.clone(),
            llm: self.api.llm(&self.llm),
            shots: self.shots.unwrap_or(base.shots),
            layers: self.layers.unwrap_or(base.layers),
            seed: self.seed,
            support: self.support.unwrap_or(base.support),
            prompts: self.prompts.clone(),
        }
    }
}

pub fn caption(args: CaptionArgs) -> Result<()> {
    let cfg = args.common.config(VqaCommonConfig::default());
    vqa::caption_each(&cfg, &args.images, |c| {
        println!("{}\t{}", c.image.display(), c.caption);
        Ok(())
    })?;
    Ok(())
}

pub fn vqa(args: VqaArgs) -> Result<()> {
    let cfg = args
        .common
        .config(EvalVqaConfig::builtin(VqaTask::Vqa)?.common);
    println!(
        "{}",
        vqa::vqa(&cfg, &args.image, &args.question, args.open)?
    );
    Ok(())
}

pub fn eval_vqa(args: EvalVqaArgs) -> Result<()> {
    let mut cfg = match args.task.as_str() {
        "vqa" => EvalVqaConfig::builtin(VqaTask::Vqa)?,
        "caption" => EvalVqaConfig::builtin(VqaTask::Caption)?,
        name => EvalVqaConfig::for_task(TaskSpec::resolve(name)?),
    };
    cfg.common = args.common.config(cfg.common.clone());
    cfg.limit = args.limit.unwrap_or(cfg.limit);
    cfg.out = args.out;
    cfg.words = args.words;
    cfg.teacher = args.teacher.config();
    if spae_eval::naming::runs(&cfg) {
        println!("{}", spae_eval::naming::eval_naming(&cfg)?.markdown);
        return Ok(());
    }
    println!("{}", vqa::eval_vqa(&cfg)?.markdown);
    Ok(())
}
