# spae-icl tasks. `just --list` shows them.

# Tokenize a bundled sample with the default checkpoint (fetches Gemma 3 270M on first use).
demo:
    cargo run --release --bin spae-icl -- tokenize datasets/samples/mnist-seven.png

# The test suite, as CI runs it.
test:
    cargo test --workspace

# Formatting and lints, as the style guide asks.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings

# Fetch and verify the LLM files into $SPAE_HOME.
fetch:
    cargo run --release --bin spae-icl -- fetch gemma3-270m smollm2-135m

# Codebook sizes for both LLM vocabularies under the default filter.
vocab:
    cargo run --release --bin spae-icl -- vocab --vocab gemma3-270m
    cargo run --release --bin spae-icl -- vocab --vocab smollm2-135m
