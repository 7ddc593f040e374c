//! `spae-icl`: let a frozen LLM see and draw with SPAE image words.
//!
//! A thin binary: it parses flags into the library's configurations (`spae-eval`), calls
//! it, prints what it returns, and owns exit codes (0 ok, 2 error). Results go to stdout,
//! everything else to stderr.

mod cli;
mod cmd;
mod malloc;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

fn main() -> ExitCode {
    malloc::keep_large_blocks_on_heap();
    quiet_on_closed_pipe();
    let cli = Cli::parse();
    init_tracing(cli.verbose, cli.quiet);
    let result = match cli.command {
        Command::Fetch(args) => cmd::tokens::fetch(args),
        Command::Vocab(args) => cmd::tokens::vocab(args),
        Command::Init(args) => cmd::tokens::init(args),
        Command::Train(args) => cmd::tokens::train(args),
        Command::Tokenize(args) => cmd::tokens::tokenize(args),
        Command::Decode(args) => cmd::tokens::decode(args),
        Command::Reconstruct(args) => cmd::tokens::reconstruct(args),
        Command::Chat(args) => cmd::llm::chat(args),
        Command::Serve(args) => cmd::llm::serve(args),
        Command::EvalTokenizer(args) => cmd::evals::eval_tokenizer(args),
        Command::TableTokenizer(args) => cmd::evals::table_tokenizer(args),
        Command::Ablations(args) => cmd::evals::ablations(args),
        Command::TrainScorer(args) => cmd::evals::train_scorer(args),
        Command::ScorerReport(args) => cmd::evals::scorer_report(args),
        Command::Plot(command) => cmd::evals::plot(command),
        Command::Compare(args) => cmd::evals::compare(args),
        Command::Tasks => cmd::fewshot::tasks(),
        Command::Run(args) => cmd::fewshot::run(args),
        Command::Table1(args) => cmd::fewshot::table1(args),
        Command::Generate(args) => cmd::draw::generate(args),
        Command::EvalGenerate(args) => cmd::draw::eval_generate(args),
        Command::ImageToImage(args) => cmd::draw::image_to_image(args),
        Command::TrainJudge(args) => cmd::draw::train_judge(args),
        Command::Caption(args) => cmd::vqa::caption(args),
        Command::Vqa(args) => cmd::vqa::vqa(args),
        Command::EvalVqa(args) => cmd::vqa::eval_vqa(args),
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

/// `spae-icl scorer-report | head` ends quietly, as Unix tools do, instead of panicking when
/// the reader closes the pipe (Rust ignores SIGPIPE, so `println!` would fail).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn quiet_on_closed_pipe() {
    // SAFETY: restores the default action of one signal, once, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn quiet_on_closed_pipe() {}

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
