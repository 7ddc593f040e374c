//! `generate`, `eval-generate`, `image-to-image`, `train-judge`: a frozen LLM draws by writing
//! image words (paper Sec. 3.3 and 4.3), scored by an independent digit judge.

use anyhow::Result;
use spae_core::JudgeTrainConfig;
use spae_eval::generate::{self, EvalGenerateConfig, GenerateConfig, WriterConfig};
use spae_eval::image2image::{self, ImageToImageConfig};

use crate::cli::{
    ApiArgs, CheckpointArg, EvalGenerateArgs, GenerateArgs, ImageToImageArgs, TrainJudgeArgs,
};

/// The tokenizer, the LLM and the sampling the three drawing commands share.
fn writer(
    ckpt: &CheckpointArg,
    llm: &str,
    api: &ApiArgs,
    temperature: f32,
    seed: u64,
    unconstrained: bool,
    prompts: Option<std::path::PathBuf>,
) -> WriterConfig {
    WriterConfig {
        checkpoint: ckpt.builtin(),
        llm: api.llm(llm),
        temperature,
        seed,
        unconstrained,
        prompts,
    }
}

pub fn generate(args: GenerateArgs) -> Result<()> {
    let cfg = GenerateConfig {
        class: args.class,
        shots: args.shots,
        order: args.order,
        count: args.count,
        layers: args.layers,
        writer: writer(
            &args.ckpt,
            &args.llm,
            &args.api,
            args.temperature,
            args.seed,
            args.unconstrained,
            args.prompts,
        ),
        data: args.data,
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
        writer: writer(
            &args.ckpt,
            &args.llm,
            &args.api,
            args.temperature,
            args.seed,
            false,
            args.prompts,
        ),
        judge: args.judge,
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
        writer: writer(
            &args.ckpt,
            &args.llm,
            &args.api,
            args.temperature,
            args.seed,
            args.unconstrained,
            args.prompts,
        ),
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
