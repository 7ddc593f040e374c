//! Quick timings without criterion: load, prefill of N tokens, decode of 32 tokens.
//! `cargo run -p llm-client --example timing -- local:gemma3-270m 512`.

use std::time::Instant;

use llm_client::{GenerateParams, LoadOptions, LocalModel, ModelSpec, Prompt};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let name = args.get(1).map_or("local:gemma3-270m", String::as_str);
    let n: usize = args.get(2).map_or(Ok(512), |s| s.parse())?;
    let options = LoadOptions {
        reuse_prefix: false,
        ..LoadOptions::default()
    };
    let t0 = Instant::now();
    let model = LocalModel::load(&ModelSpec::parse(name)?, &options)?;
    println!("load {:.2} s", t0.elapsed().as_secs_f64());
    let text = "The quick brown fox jumps over the lazy dog. ".repeat(n / 8 + 2);
    let mut ids = model.prompt_ids(&Prompt::Text(text))?;
    ids.truncate(n);
    for _ in 0..2 {
        let t0 = Instant::now();
        model.logits(&ids, ids.len() - 1)?;
        let dt = t0.elapsed().as_secs_f64();
        println!("prefill {n}: {dt:.2} s, {:.1} tok/s", n as f64 / dt);
    }
    let t0 = Instant::now();
    let c = model.generate_tokens(&ids[..8], &GenerateParams::greedy(32))?;
    let dt = t0.elapsed().as_secs_f64();
    println!(
        "decode: {} tokens in {dt:.2} s, {:.1} tok/s",
        c.tokens.len(),
        c.tokens.len() as f64 / dt
    );
    Ok(())
}
