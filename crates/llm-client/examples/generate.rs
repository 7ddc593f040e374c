//! Greedy generation from the command line, with timings:
//! `cargo run -p llm-client --example generate -- local:gemma3-270m "The capital of France is" 16`

use std::time::Instant;

use llm_client::{GenerateParams, LanguageModel, LoadOptions, LocalModel, ModelSpec, Prompt};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let name = args.get(1).map_or("local:gemma3-270m", String::as_str);
    let prompt = args
        .get(2)
        .map_or("The capital of France is", String::as_str);
    let n: usize = args.get(3).map_or(Ok(16), |s| s.parse())?;
    let t0 = Instant::now();
    let model = LocalModel::load(&ModelSpec::parse(name)?, &LoadOptions::default())?;
    eprintln!("loaded {name} in {:.2} s", t0.elapsed().as_secs_f64());
    let prompt = Prompt::Text(prompt.to_string());
    let ids = model.prompt_ids(&prompt)?;
    eprintln!("prompt ids {ids:?}");
    let t0 = Instant::now();
    let c = model.generate_tokens(&ids, &GenerateParams::greedy(n))?;
    let dt = t0.elapsed().as_secs_f64();
    println!("{:?}", c.text);
    println!("{:?}", c.tokens);
    eprintln!(
        "{} tokens in {dt:.2} s ({:.1} tok/s incl. prefill), finish {:?}",
        c.tokens.len(),
        c.tokens.len() as f64 / dt,
        c.finish_reason
    );
    let _ = model.name();
    Ok(())
}
