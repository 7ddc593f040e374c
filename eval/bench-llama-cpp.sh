#!/usr/bin/env bash
# Prefill and decode speed of our local models beside llama.cpp on the same GGUF files, threads
# and machine. llama.cpp is built from the llama-cpp-python source package (fetched by pip, by
# package name), CPU only, `-march=native`, into $SPAE_HOME/llama.cpp; nothing of it is kept in
# this repository.
#
#   eval/bench-llama-cpp.sh [THREADS]      # default: all cores
#
# Writes eval/results/bench-local/{llama-cpp.json,spae.txt,summary.md}. Run it on a quiet
# machine: both sides use every core, and a second job halves either number.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${1:-$(nproc)}"
VERSION=0.3.36
HOME_DIR="${SPAE_HOME:-$HOME/.cache/spae-icl}"
WORK="$HOME_DIR/llama.cpp/$VERSION"
OUT=eval/results/bench-local
mkdir -p "$WORK" "$OUT"

BENCH="$WORK/build/bin/llama-bench"
if [ ! -x "$BENCH" ]; then
    python3 -m pip install --quiet cmake scikit-build-core
    python3 -m pip download --quiet "llama-cpp-python==$VERSION" --no-deps \
        --no-binary llama-cpp-python --no-build-isolation -d "$WORK"
    tar -xzf "$WORK/llama_cpp_python-$VERSION.tar.gz" -C "$WORK"
    SRC="$WORK/llama_cpp_python-$VERSION/vendor/llama.cpp"
    # AMX off: on a Sapphire Rapids VM llama-bench 0.3.36 built with it segfaults in
    # ggml_backend_amx_mul_mat (although it requests the tile state, which Linux grants there), so
    # its fastest build that runs is the AVX-512 VNNI one. Ours uses AMX where it runs
    # (`SPAE_KERNEL=avx512vnni` compares like with like).
    NO_AMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    cmake -S "$SRC" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
        -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF \
        -DCMAKE_C_FLAGS="$NO_AMX" -DCMAKE_CXX_FLAGS="$NO_AMX"
    cmake --build "$WORK/build" --target llama-bench -j "$(nproc)"
fi

cargo build --release --bin spae-icl --quiet
GGUFS=$(target/release/spae-icl fetch gemma3-270m smollm2-135m | cut -f2)
# llama-bench: pp = prompt processing (prefill) of 512 and 2048 tokens, tg = 64 generated tokens.
"$BENCH" $(for g in $GGUFS; do echo -m "$g"; done) -t "$THREADS" -p 512,2048 -n 64 -r 3 -o json \
    > "$OUT/llama-cpp.json"

# Ours: the criterion bench of crates/llm-client/benches/local.rs (same prompt lengths, 64 tokens),
# with the allocator settings the spae-icl binary makes at start (crates/spae-icl/src/malloc.rs).
MALLOC_MMAP_THRESHOLD_=$((32 << 20)) MALLOC_TRIM_THRESHOLD_=$((1 << 30)) \
    MALLOC_TOP_PAD_=$((256 << 20)) RAYON_NUM_THREADS="$THREADS" \
    cargo bench --workspace --bench local -- --noplot 2>/dev/null \
    | tee "$OUT/spae.txt"

python3 - "$OUT" "$THREADS" <<'PY'
import json, re, sys
out, threads = sys.argv[1], sys.argv[2]
llama = json.load(open(f"{out}/llama-cpp.json"))
ours = {}
name = None
for line in open(f"{out}/spae.txt"):
    m = re.match(r"^(\S+)/(prefill|decode)/(\d+)(\s|$)", line)
    if m:
        name = (m.group(1), m.group(2), int(m.group(3)))
    m = re.search(r"thrpt:\s+\[\s*\S+\s+\S+\s+(\S+)\s+(\S)?elem/s", line)
    if m and name:
        v = float(m.group(1)) * {"K": 1e3, "M": 1e6}.get(m.group(2) or "", 1)
        ours[name] = v
        name = None
rows = []
for r in llama:
    model = "gemma3-270m" if "gemma" in r["model_filename"].lower() else "smollm2-135m"
    if r["n_prompt"] > 0:
        key, what = (model, "prefill", r["n_prompt"]), f"prefill {r['n_prompt']}"
    else:
        key, what = (model, "decode", 64), f"decode {r['n_gen']}"
    mine = ours.get(key)
    rows.append((model, what, mine, r["avg_ts"]))
md = [f"# Local models beside llama.cpp ({threads} threads)", "",
      "tokens/s; llama.cpp: `llama-bench` from llama-cpp-python's vendored source, -march=native; "
      "ours: `cargo bench --workspace --bench local` (criterion median). Written by "
      "`eval/bench-llama-cpp.sh`.", "",
      "| model | test | spae-icl (tokens/s) | llama.cpp (tokens/s) | ratio |", "|---|---|---|---|---|"]
for model, what, mine, theirs in rows:
    ratio = f"{mine / theirs:.2f}" if mine else "-"
    ours_s = f"{mine:.1f}" if mine else "-"
    md.append(f"| {model} | {what} | {ours_s} | {theirs:.1f} | {ratio} |")
open(f"{out}/summary.md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
