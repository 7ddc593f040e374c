//! Progress of long work: a bar on a terminal, and log lines through `tracing` when stderr is
//! not one (a CI log, `nohup`, a pipe), so a run of many minutes never looks hung.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How often the log reports progress when there is no bar to watch.
const LOG_EVERY: Duration = Duration::from_secs(30);

/// A counter of `len` steps labelled `what`.
pub struct Progress {
    bar: ProgressBar,
    what: String,
    len: u64,
    pos: AtomicU64,
    log: Option<Mutex<Instant>>,
    started: Instant,
}

pub fn bar(len: u64, what: &str) -> Progress {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{prefix} {wide_bar} {pos}/{len} [{elapsed}<{eta}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix(what.to_string());
    // indicatif hides the bar when stderr is not a terminal; the log takes over then.
    let log = bar.is_hidden().then(|| Mutex::new(Instant::now()));
    if log.is_some() {
        tracing::info!("{what}: 0/{len}");
    }
    Progress {
        bar,
        what: what.to_string(),
        len,
        pos: AtomicU64::new(0),
        log,
        started: Instant::now(),
    }
}

impl Progress {
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
        let pos = self.pos.fetch_add(n, Ordering::Relaxed) + n;
        if let Some(last) = &self.log {
            if let Ok(mut last) = last.lock() {
                if last.elapsed() >= LOG_EVERY || pos == self.len {
                    *last = Instant::now();
                    let elapsed = self.started.elapsed().as_secs_f64();
                    let eta = elapsed / pos.max(1) as f64 * self.len.saturating_sub(pos) as f64;
                    tracing::info!(
                        "{}: {pos}/{} ({elapsed:.0} s, about {eta:.0} s left) {}",
                        self.what,
                        self.len,
                        self.bar.message()
                    );
                }
            }
        }
    }

    pub fn set_message(&self, msg: String) {
        self.bar.set_message(msg);
    }

    pub fn finish_and_clear(&self) {
        self.bar.finish_and_clear();
    }
}
