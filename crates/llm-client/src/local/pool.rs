//! Running one forward pass on rayon's pool with every core ready for its parallel steps.
//!
//! A decoder layer is a chain of short parallel steps (the q/k/v, output and feed-forward
//! matmuls, attention, candle's norm and rotary kernels) separated by a few microseconds of
//! serial work. Called from outside the pool, each step is a job injected into it with the
//! caller asleep until a worker has finished it: two thread hand-offs per step, a quarter of a
//! small model's decode time. Run on a worker instead, a step is a join on that worker's own
//! queue, but an idle worker still parks after a few rounds without work and is woken by the
//! next step (a futex wake and a scheduler round trip each time). llama.cpp keeps its threads
//! spinning between the steps of a graph for the same reason; [`run`] does that with rayon's
//! own workers, for as long as the pass lasts and never longer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A helper gives up after this long without finding a job, pass finished or not: the gaps
/// between a pass's steps are microseconds, so it only ends a wait that has become pointless
/// (a pass stalled on something else, or a helper that took a job of another caller's pass).
const MAX_IDLE: Duration = Duration::from_millis(1);

/// Idle polls between two `sched_yield`s, so that a helper cedes its core to any other
/// runnable thread (a busy machine) every few microseconds instead of spinning over it.
const POLLS_PER_YIELD: u32 = 64;

/// `f` run on a worker of rayon's current pool, its other workers polling the pool for jobs
/// until `f` returns (or each has been idle for [`MAX_IDLE`]).
pub fn run<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let done = AtomicBool::new(false);
    rayon::scope(|scope| {
        let owner = rayon::current_thread_index();
        let done = &done;
        for _ in 1..rayon::current_num_threads() {
            scope.spawn(move |_| {
                // The owner picks up its own helper while it waits inside a join: it must not
                // poll for a pass that is suspended below it on its own stack.
                if rayon::current_thread_index() != owner {
                    help(done);
                }
            });
        }
        // Set on return and on unwind alike, so that a panicking pass releases the helpers.
        struct Done<'a>(&'a AtomicBool);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Release);
            }
        }
        let _done = Done(done);
        f()
    })
}

/// Run the pool's jobs as they appear, until `done` or idle for [`MAX_IDLE`].
fn help(done: &AtomicBool) {
    let mut idle_since: Option<Instant> = None;
    let mut polls = 0u32;
    while !done.load(Ordering::Acquire) {
        if let Some(rayon::Yield::Executed) = rayon::yield_now() {
            idle_since = None;
            polls = 0;
            continue;
        }
        polls += 1;
        if polls.is_multiple_of(POLLS_PER_YIELD) {
            let since = *idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() > MAX_IDLE {
                return;
            }
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap_or_else(|e| panic!("a pool of {threads} threads: {e}"))
    }

    /// Many short parallel steps, as in a decode pass; each sum is checked against its value.
    fn steps(n: usize) -> u64 {
        let mut total = 0u64;
        for step in 0..n as u64 {
            let sum: u64 = (0..64u64).into_par_iter().map(|i| i * step).sum();
            assert_eq!(sum, step * 63 * 64 / 2);
            total += sum;
        }
        total
    }

    #[test]
    fn runs_on_a_worker_and_returns_the_result() {
        for threads in [1, 2, 4] {
            let p = pool(threads);
            let (on_worker, total) = p.install(|| {
                // install already runs on a worker; run from a plain thread is covered below.
                run(|| (rayon::current_thread_index().is_some(), steps(200)))
            });
            assert!(on_worker);
            assert_eq!(total, (0..200u64).map(|s| s * 2016).sum::<u64>());
        }
        // From outside any pool (the global one), as the model's callers are.
        assert!(run(|| rayon::current_thread_index().is_some()));
    }

    /// Passes started from several threads at once share the pool: helpers pick up each
    /// other's jobs and owners pick up helpers, and every pass still finishes.
    #[test]
    fn concurrent_passes_all_finish() {
        let p = pool(3);
        let totals: Vec<u64> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| p.install(|| (0..20).map(|_| run(|| steps(50))).sum())))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| panic!("a pass panicked")))
                .collect()
        });
        let one = (0..50u64).map(|s| s * 2016).sum::<u64>() * 20;
        assert_eq!(totals, vec![one; 4]);
    }

    /// A panic inside the pass reaches the caller, and the helpers are released.
    #[test]
    fn a_panicking_pass_releases_its_helpers() {
        let p = pool(2);
        let caught = p.install(|| std::panic::catch_unwind(|| run(|| panic!("in the pass"))));
        assert!(caught.is_err());
        assert_eq!(p.install(|| run(|| steps(10))), 90 * 2016 / 2);
    }
}
