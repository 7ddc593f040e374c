#!/usr/bin/env bash
# Encoding throughput of the default tokenizer's shape, ours (candle, criterion) beside the same
# model in PyTorch on the same cores (target: at least 1,000 images/s). PyTorch is installed by
# pip, by package name, into a virtual environment under $SPAE_HOME (about 3 GB with the libraries
# its wheel loads at import, even on CPU); nothing of it is kept in this repository.
#
#   eval/bench-encode.sh [THREADS]      # default: all cores
#
# Writes eval/results/bench-encode/{torch.json,spae.txt,summary.md}. Run it on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${1:-$(nproc)}"
HOME_DIR="${SPAE_HOME:-$HOME/.cache/spae-icl}"
VENV="$HOME_DIR/torch-venv"
OUT=eval/results/bench-encode
mkdir -p "$OUT"

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet torch
fi
# Both sides get the allocator settings the spae-icl binary makes at start
# (crates/spae-icl/src/malloc.rs), so ours measures what `spae-icl tokenize` runs: without them
# every multi-MB tensor candle frees goes back to the kernel and the next one faults in again.
export MALLOC_MMAP_THRESHOLD_=$((32 << 20)) MALLOC_TRIM_THRESHOLD_=$((1 << 30)) MALLOC_TOP_PAD_=$((256 << 20))
"$VENV/bin/python" eval/bench_encode_torch.py --threads "$THREADS" --dims 16,64 \
    --json "$OUT/torch.json"

RAYON_NUM_THREADS="$THREADS" cargo bench --workspace --bench encode -- --noplot 2>/dev/null \
    | tee "$OUT/spae.txt"

python3 - "$OUT" "$THREADS" <<'PY'
import json, re, sys
out, threads = sys.argv[1], sys.argv[2]
torch = json.load(open(f"{out}/torch.json"))
ours, name = {}, None
for line in open(f"{out}/spae.txt"):
    m = re.match(r"^encode_28x28/(.+?)\s*$", line)
    if m and "thrpt" not in line:
        name = m.group(1)
    # criterion: "thrpt:  [low unit mid unit high unit]", units elem/s or Kelem/s
    pairs = re.findall(r"([\d.]+)\s+(\S*elem/s)", line) if "thrpt:" in line else []
    if len(pairs) == 3 and name:
        v, unit = pairs[1]
        ours[name] = float(v) * {"elem/s": 1, "Kelem/s": 1e3, "Melem/s": 1e6}[unit]
        name = None
cases = {
    "encoder forward only": "baseline: encoder forward only (patch, d={d})",
    "tokenize 2 layers": "tokenize 2 layers (5 words), 4096 x {d}",
    "tokenize 5 layers": "tokenize 5 layers (149 words), 4096 x {d}",
}
lines = [
    f"Encoding 28x28 images, batches of {torch['batch']}, {threads} threads, images/s "
    f"(ours: criterion median; PyTorch {torch['torch']}: `eval/bench_encode_torch.py`).",
    "",
    "| codebook dim | case | ours (candle) | PyTorch | ours / PyTorch |",
    "|---|---|---|---|---|",
]
for r in torch["rows"]:
    key = cases[r["case"]].format(d=r["dim"])
    mine = ours.get(key)
    ratio = f"{mine / r['images_per_s']:.2f}x" if mine else "n/a"
    mine_s = f"{mine:,.0f}" if mine else "n/a"
    lines.append(f"| {r['dim']} | {r['case']} | {mine_s} | {r['images_per_s']:,.0f} | {ratio} |")
open(f"{out}/summary.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
