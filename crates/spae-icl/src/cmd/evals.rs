//! `eval-tokenizer`, `table-tokenizer`, `ablations`, `train-scorer`, `scorer-report`, `plot`,
//! `compare`: the tokenizer and its scorer measured, figures of the results, and two results
//! compared.

use anyhow::{Context, Result};
use candle_core::Device;
use spae_core::scorer::devise::BackboneKind;
use spae_eval::ablations::AblationsConfig;
use spae_eval::plot::{self, PyramidPlotConfig};
use spae_eval::scorer::{ScorerArch, ScorerReportConfig, TrainScorerConfig};
use spae_eval::tokenizer_eval::{self, TableTokenizerConfig};

use crate::cli::{
    AblationsArgs, BackboneArg, CompareArgs, EvalTokenizerArgs, Format, PlotCommand, ScorerArchArg,
    ScorerReportArgs, TableTokenizerArgs, TrainScorerArgs,
};

pub fn eval_tokenizer(args: EvalTokenizerArgs) -> Result<()> {
    let (model, label) = args.ckpt.builtin().load(&Device::Cpu)?;
    let data = tokenizer_eval::data_for(&model, &args.data, &args.split)?;
    let n = args.limit.map_or(data.len(), |l| l.min(data.len()));
    let scorer = match args.scorer.as_str() {
        "none" => None,
        p => Some(
            spae_eval::scorer::load_scorer(p, model.codebook(), &args.data)
                .with_context(|| format!("--scorer {p}"))?,
        ),
    };
    let k = args.top_k.min(model.codebook().len());
    let rows = tokenizer_eval::depth_rows(&model, &data, n, scorer.as_ref(), k, args.batch_size)?;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Format::Text => {
            println!("{} on {} {} images ({})", label, n, args.split, data.name);
            print!("{}", tokenizer_eval::markdown(&rows));
        }
    }
    Ok(())
}

pub fn table_tokenizer(args: TableTokenizerArgs) -> Result<()> {
    let cfg = TableTokenizerConfig {
        checkpoints: args.checkpoints,
        data: args.data,
        split: args.split,
        limit: args.limit,
        scorer: args.scorer,
        top_k: args.top_k,
        out: args.out,
    };
    let md = tokenizer_eval::table_tokenizer(&cfg)?;
    println!("{md}");
    println!("written: {}", cfg.out.join("table-tokenizer.md").display());
    Ok(())
}

pub fn ablations(args: AblationsArgs) -> Result<()> {
    let cfg = AblationsConfig {
        variants: args.variants,
        steps: args.steps,
        batch_size: args.batch_size,
        lr: args.lr,
        train_data: args.train_data,
        project_dim: args.project_dim,
        scorer: args.scorer,
        eval_data: args.eval_data,
        limit: args.limit,
        task: args.task,
        episodes: args.episodes,
        llm: args.api.llm(&args.llm),
        out: args.out,
    };
    let md = spae_eval::ablations::ablations(&cfg)?;
    println!("{md}");
    println!("written: {}", cfg.out.join("ablations.md").display());
    Ok(())
}

pub fn train_scorer(args: TrainScorerArgs) -> Result<()> {
    let backbone = match args.backbone {
        BackboneArg::MobileNetV2 => BackboneKind::MobileNetV2,
        BackboneArg::EfficientNetLite2 => BackboneKind::EfficientNetLite2,
    };
    let cfg = TrainScorerConfig {
        data: args.data,
        image_size: args.images.image_size,
        channels: args.images.channels,
        steps: args.steps,
        batch_size: args.batch_size,
        lr: args.lr,
        seed: args.seed,
        out: args.out,
        arch: match args.arch {
            ScorerArchArg::Tower => ScorerArch::Tower,
            ScorerArchArg::Devise => ScorerArch::Devise,
        },
        backbone_size: args.backbone_size.unwrap_or(backbone.native_size()),
        backbone,
    };
    for z in spae_eval::scorer::train_scorer(&cfg)? {
        println!("{}", serde_json::to_string(&z)?);
    }
    eprintln!("wrote {}", cfg.out.display());
    Ok(())
}

pub fn scorer_report(args: ScorerReportArgs) -> Result<()> {
    let cfg = ScorerReportConfig {
        scorer: args.scorer,
        data: args.data,
        vocab: args.spec.config(),
        words: args.words,
        image_size: args.images.image_size,
        channels: args.images.channels,
    };
    for line in spae_eval::scorer::scorer_report(&cfg)? {
        println!("{line}");
    }
    Ok(())
}

pub fn compare(args: CompareArgs) -> Result<()> {
    let rows = spae_eval::compare::compare_folders(&args.a, &args.b)?;
    print!("{}", spae_eval::compare::markdown(&args.a, &args.b, &rows));
    Ok(())
}

pub fn plot(command: PlotCommand) -> Result<()> {
    let written = match command {
        PlotCommand::Table1(args) => plot::plot_table1(&args.results)?,
        PlotCommand::Depth(args) => vec![plot::plot_depth(&args.results)?],
        PlotCommand::Pyramid(args) => vec![plot::plot_pyramid(&PyramidPlotConfig {
            checkpoint: args.ckpt.builtin(),
            data: args.data,
            split: args.split,
            count: args.count,
            scale: args.scale,
            output: args.output,
        })?],
    };
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}
