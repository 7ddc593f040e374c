//! `spae-icl`: let a frozen LLM see and draw with SPAE image words.
//!
//! A thin binary: it parses flags, resolves defaults once, calls the library crates and owns
//! exit codes (0 ok, 2 error). Results go to stdout, everything else to stderr.

mod ablations;
mod chat;
mod cli;
mod evaluate;
mod generate;
mod image2image;
mod judge;
mod llm;
mod malloc;
mod plot;
mod progress;
mod run;
mod scorer;
mod table;
mod tokenizer_table;
mod tokens;
mod train;
mod vocab;
mod vqa;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

fn main() -> ExitCode {
    malloc::keep_large_blocks_on_heap();
    let cli = Cli::parse();
    init_tracing(cli.verbose, cli.quiet);
    let result = match cli.command {
        Command::Fetch(args) => vocab::fetch(args),
        Command::Vocab(args) => vocab::report(args),
        Command::Init(args) => tokens::init(args),
        Command::Train(args) => train::train(args),
        Command::Tokenize(args) => tokens::tokenize(args),
        Command::Decode(args) => tokens::decode(args),
        Command::Reconstruct(args) => tokens::reconstruct(args),
        Command::Chat(args) => chat::chat(args),
        Command::EvalTokenizer(args) => evaluate::eval_tokenizer(args),
        Command::TableTokenizer(args) => tokenizer_table::table_tokenizer(args),
        Command::Ablations(args) => ablations::ablations(args),
        Command::Run(args) => run::run(args),
        Command::Table1(args) => table::table1(args),
        Command::Generate(args) => generate::generate(args),
        Command::ImageToImage(args) => image2image::image_to_image(args),
        Command::Caption(args) => vqa::caption(args),
        Command::Vqa(args) => vqa::vqa(args),
        Command::EvalVqa(args) => vqa::eval_vqa(args),
        Command::TrainJudge(args) => judge::train_judge(args),
        Command::EvalGenerate(args) => generate::eval_generate(args),
        Command::Serve(args) => llm::serve(args),
        Command::TrainScorer(args) => scorer::train_scorer(args),
        Command::ScorerReport(args) => scorer::report(args),
        Command::Plot(command) => plot::plot(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("spae-icl: {err:#}");
            if let Some(hint) = cli::hint_for(&err) {
                eprintln!("\n{hint}");
            }
            ExitCode::from(2)
        }
    }
}

/// The compute device named by `--device`.
pub fn device(name: &str) -> anyhow::Result<candle_core::Device> {
    match name {
        "cpu" => Ok(candle_core::Device::Cpu),
        #[cfg(feature = "cuda")]
        "cuda" => Ok(candle_core::Device::new_cuda(0)?),
        #[cfg(not(feature = "cuda"))]
        "cuda" => anyhow::bail!(
            "--device cuda: this spae-icl was built without CUDA; rebuild with `--features cuda`"
        ),
        other => anyhow::bail!("--device {other:?}: expected cpu or cuda"),
    }
}

fn init_tracing(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SPAE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
}
