# spae-icl tasks. `just --list` shows them.

# The main job: the local Gemma 3 classifies the bundled sample by in-context learning.
demo:
    cargo run --release --bin spae-icl -- run

# Tokenize a bundled digit with the default checkpoint.
tokenize:
    cargo run --release --bin spae-icl -- tokenize datasets/samples/mnist-seven.png

# Table 1 (few-shot grid) on Fashion-MNIST with the local Gemma 3; `episodes` per cell.
table1 episodes="20":
    cargo run --release --bin spae-icl -- table1 --task fashion-mnist --episodes {{episodes}}

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

# The 1-shot, induction column of Table 1 at 100 episodes (2- and 5-way; SPAE 2 and 3 layers,
# oracle and random words; open, constrained and calibrated scoring).
report-1shot:
    cargo run --release --bin spae-icl -- table1 --task fashion-mnist --columns 1 --episodes 100 --out eval/results/fashion-mnist-1shot-gemma3-270m

# Digits drawn by the local Gemma 3, scored by the shipped judge beside random and copy baselines.
eval-generate count="10" layers="3":
    cargo run --release --bin spae-icl -- eval-generate --count {{count}} --layers {{layers}}

# Retrain the shipped digit judge.
train-judge:
    cargo run --release --bin spae-icl -- train-judge --epochs 8

# Figures: Table 1 accuracy curves of the measured 1-shot table, and the pyramid of MNIST digits.
plots:
    cargo run --release --bin spae-icl -- plot table1 --results eval/results/fashion-mnist-1shot-gemma3-270m
    cargo run --release --bin spae-icl -- plot pyramid -o eval/results/pyramid-mnist.png
