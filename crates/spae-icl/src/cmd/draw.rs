//! `generate`, `eval-generate`, `image-to-image`, `train-judge`: a frozen LLM draws by writing
//! image words (paper Sec. 3.3 and 4.3), scored by an independent digit judge.

use anyhow::Result;
use spae_core::JudgeTrainConfig;
use spae_eval::generate::{self, EvalGenerateConfig, GenerateConfig};
use spae_eval::image2image::{self, ImageToImageConfig};

use crate::cli::{EvalGenerateArgs, GenerateArgs, ImageToImageArgs, TrainJudgeArgs};

pub fn generate(args: GenerateArgs) -> Result<()> {
    let cfg = GenerateConfig {
        class: args.class,
        shots: args.shots,
        order: args.order,
        count: args.count,
        layers: args.layers,
        data: args.data,
        checkpoint: args.ckpt.builtin(),
        llm: args.api.llm(&args.llm),
        temperature: args.temperature,
        seed: args.seed,
        unconstrained: args.unconstrained,
        prompts: args.prompts,
        output: Some(args.output),
    };
    eprintln!("{}", generate::generate(&cfg)?);
    Ok(())
}

pub fn eval_generate(args: EvalGenerateArgs) -> Result<()> {
    let cfg = EvalGenerateConfig {
        shots: args.shots,
        count: args.count,
        order: args.order,
        layers: args.layers,
        checkpoint: args.ckpt.builtin(),
        llm: args.api.llm(&args.llm),
        temperature: args.temperature,
        seed: args.seed,
        judge: args.judge,
        prompts: args.prompts,
        out: args.out,
    };
    println!("{}", generate::eval_generate(&cfg)?.markdown);
    Ok(())
}

pub fn image_to_image(args: ImageToImageArgs) -> Result<()> {
    let cfg = ImageToImageConfig {
        task: args.task,
        pairs: args.pairs,
        count: args.count,
        layers: args.layers,
        strength: args.strength,
        data: args.data,
        checkpoint: args.ckpt.builtin(),
        llm: args.api.llm(&args.llm),
        temperature: args.temperature,
        seed: args.seed,
        unconstrained: args.unconstrained,
        prompts: args.prompts,
        out: args.out,
    };
    let s = image2image::image_to_image(&cfg)?;
    println!("{}", s.markdown);
    println!("written: {}", s.summary_md.display());
    Ok(())
}

pub fn train_judge(args: TrainJudgeArgs) -> Result<()> {
    let cfg = JudgeTrainConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        seed: args.seed,
        ..JudgeTrainConfig::default()
    };
    println!("{}", generate::train_mnist_judge(&cfg, &args.out)?);
    Ok(())
}
