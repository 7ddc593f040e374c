//! `run`, `tasks`, `table1`: few-shot classification by a frozen LLM (paper Sec. 4.1).

use anyhow::Result;
use spae_eval::fewshot::{self, RunConfig, Scoring, TeacherConfig};
use spae_eval::table1::{self, Table1Config};
use spae_eval::{CheckpointRef, LlmConfig, TaskSpec};

use crate::cli::{ApiArgs, EpisodeArgs, RunArgs, Table1Args, TeacherArgs};

impl ApiArgs {
    /// The LLM `name`, reached as these flags say.
    pub fn llm(&self, name: &str) -> LlmConfig {
        LlmConfig {
            name: name.to_string(),
            api_key_env: self.api_key_env.clone(),
            cache: self.cache.clone(),
            no_cache: self.no_cache,
            requests_per_minute: self.requests_per_minute,
        }
    }
}

impl EpisodeArgs {
    /// The flags given, over the task's defaults in `cfg`.
    fn apply(&self, cfg: &mut RunConfig) {
        cfg.way = self.way.unwrap_or(cfg.way);
        cfg.shots = self.shots.unwrap_or(cfg.shots);
        cfg.repeats = self.repeats.unwrap_or(cfg.repeats);
        cfg.episodes = self.episodes.unwrap_or(cfg.episodes);
        cfg.layers = self.layers.unwrap_or(cfg.layers);
        if self.no_induction {
            cfg.induction = false;
        } else if self.induction {
            cfg.induction = true;
        }
    }
}

impl RunArgs {
    /// The scorings in order, the shorthands first (default: the task's).
    pub fn scorings(&self, task: &[Scoring]) -> Vec<Scoring> {
        let mut out = Vec::new();
        if self.calibrate {
            out.extend([Scoring::Calibrated, Scoring::Constrained]);
        }
        if self.constrained {
            out.push(Scoring::Constrained);
        }
        if self.scoring.is_empty() {
            out.extend(task);
        } else {
            out.extend(&self.scoring);
        }
        let mut seen = Vec::new();
        out.retain(|s| {
            let new = !seen.contains(s);
            seen.push(*s);
            new
        });
        out
    }

    pub fn config(&self) -> Result<RunConfig> {
        let task = TaskSpec::resolve(&self.task)?;
        let mut cfg = RunConfig::for_task(task);
        self.episode.apply(&mut cfg);
        cfg.scorings = self.scorings(&cfg.task.scorings);
        cfg.data = self.data.clone();
        cfg.split = self.split.clone().unwrap_or(cfg.split);
        cfg.checkpoint = CheckpointRef::new(self.ckpt.checkpoint.clone(), cfg.checkpoint.builtin);
        cfg.llm = self.api.llm(&self.llm);
        cfg.seed = self.seed;
        cfg.words = self.words;
        cfg.teacher = self.teacher.config();
        cfg.prompts = self.prompts.clone();
        cfg.text_prompts = self.text_prompts;
        cfg.max_tokens = self.max_tokens.unwrap_or(cfg.max_tokens);
        cfg.out = self.out.clone();
        Ok(cfg)
    }
}

/// `--teacher` and `--teacher-image-size`.
fn teacher(scorer: Option<String>, image_size: Option<usize>) -> Option<TeacherConfig> {
    scorer.map(|scorer| TeacherConfig { scorer, image_size })
}

impl TeacherArgs {
    pub fn config(&self) -> Option<TeacherConfig> {
        teacher(self.teacher.clone(), self.teacher_image_size)
    }
}

pub fn run(args: RunArgs) -> Result<()> {
    let summary = fewshot::execute(&args.config()?, None)?;
    println!("{}", summary.markdown);
    println!("results: {}", summary.out.display());
    Ok(())
}

/// `spae-icl tasks`: the built-in tasks, one line each.
pub fn tasks() -> Result<()> {
    for t in TaskSpec::builtin()? {
        println!("{:<18} {}", t.name, t.description);
    }
    println!("\nA task file of your own: spae-icl run --task path/to/task.toml (see README.md, \"Your own task\").");
    Ok(())
}

pub fn table1(args: Table1Args) -> Result<()> {
    let mut base = RunConfig::for_task(TaskSpec::resolve(&args.task)?);
    base.data = args.data;
    base.split = args.split.unwrap_or(base.split);
    base.checkpoint = CheckpointRef::new(args.ckpt.checkpoint.clone(), base.checkpoint.builtin);
    base.llm = args.api.llm(&args.llm);
    base.episodes = args.episodes;
    base.seed = args.seed;
    base.scorings = args.scoring;
    base.prompts = args.prompts;
    let cfg = Table1Config {
        base,
        lqae_checkpoint: args.lqae_checkpoint,
        teacher: teacher(args.teacher, args.teacher_image_size),
        ways: args.ways,
        columns: args.columns,
        out: args.out,
    };
    let (md, path) = table1::table1(&cfg)?;
    println!("{md}");
    println!("written: {}", path.display());
    Ok(())
}
