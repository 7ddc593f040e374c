//! Progress bars on stderr, hidden when stderr is not a terminal (indicatif's default).

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `len` steps labelled `what`, with a free message slot for running numbers.
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{prefix} {wide_bar} {pos}/{len} [{elapsed}<{eta}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix(what.to_string());
    bar
}
