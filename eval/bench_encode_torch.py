"""Encoding throughput of the default tokenizer's shape in PyTorch (CPU), the baseline that
`crates/spae-core/benches/encode.rs` is compared with (issue 5; `eval/bench-encode.sh` runs both).

The same model as `spae_core::patch::PatchEncoder` + `SaqQuantizer` with `ModelConfig::mnist(d)`:
28x28 gray padded to 32x32, 4x4 patches (space-to-depth) to an 8x8 grid, a linear layer to 96
channels, one residual block of two 3x3 convolutions (x + conv(silu(conv(silu(x))))), a pooled
global summary added to every position, silu and a linear layer to d; then streaming average
quantization of pyramid 1,2,4,8,8 against 4,096 entries (nearest by ||e||^2 - 2 q.e, one matmul
per layer). Random weights and codebook: throughput does not depend on their values.

    python eval/bench_encode_torch.py [--threads 2] [--dims 64,16] [--batch 256] [--json OUT]
"""

import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

GRID, PATCH, WIDTH, LAYERS, ENTRIES = 8, 4, 96, (1, 2, 4, 8, 8), 4096


class Block(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


class PatchEncoder(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.lin_in = nn.Conv2d(PATCH * PATCH, WIDTH, 1)  # a linear layer per grid position
        self.block = Block(WIDTH)
        self.glob = nn.Linear(WIDTH, WIDTH)
        self.lin_out = nn.Conv2d(WIDTH, dim, 1)

    def forward(self, images):
        x = F.pad(images, (2, 2, 2, 2))  # 28 -> 32
        x = F.pixel_unshuffle(x, PATCH)  # (b, 16, 8, 8)
        h = self.block(self.lin_in(x))
        h = h + self.glob(F.silu(h.mean((2, 3))))[:, :, None, None]
        return self.lin_out(F.silu(h)).permute(0, 2, 3, 1)  # (b, 8, 8, d)


def saq_tokenize(z, codebook, sq_norms, depth):
    """Indices per layer, as SaqQuantizer::quantize: layer l quantizes l*z - S_{l-1} at its
    positions, S accumulates the chosen rows upsampled to the grid."""
    b, _, _, d = z.shape
    total = torch.zeros_like(z)
    out = []
    for layer in range(depth):
        side = LAYERS[layer]
        r = GRID // side
        pos = torch.arange(side) * r + r // 2
        zp = z[:, pos][:, :, pos]
        sp = total[:, pos][:, :, pos]
        target = (layer + 1) * zp - sp
        q = target.reshape(-1, d)
        idx = torch.addmm(sq_norms, q, codebook.T, alpha=-2.0).argmin(1)  # ||e||^2 - 2 q.e
        e = codebook[idx].reshape(b, side, side, d)
        total = total + e.repeat_interleave(r, 1).repeat_interleave(r, 2)
        out.append(idx.reshape(b, side, side))
    return out


def images_per_second(fn, batch, warmup=2, seconds=3.0):
    for _ in range(warmup):
        fn()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        n += 1
    return n * batch / (time.perf_counter() - start)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dims", default="64,16")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images = torch.rand(args.batch, 1, 28, 28)
    rows = []
    for dim in [int(d) for d in args.dims.split(",")]:
        enc = PatchEncoder(dim).eval()
        codebook = F.normalize(torch.randn(ENTRIES, dim), dim=1)
        sq_norms = (codebook * codebook).sum(1)
        with torch.inference_mode():
            for name, fn in [
                ("encoder forward only", lambda: enc(images)),
                ("tokenize 2 layers", lambda: saq_tokenize(enc(images), codebook, sq_norms, 2)),
                ("tokenize 5 layers", lambda: saq_tokenize(enc(images), codebook, sq_norms, 5)),
            ]:
                ips = images_per_second(fn, args.batch)
                rows.append({"dim": dim, "case": name, "images_per_s": ips})
                print(f"torch {torch.__version__} d={dim} {name}: {ips:,.0f} images/s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "threads": args.threads,
                       "batch": args.batch, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
