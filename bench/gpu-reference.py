#!/usr/bin/env python3
"""
GPU REFERENCE LIMIT -- NEEDS AN NVIDIA GPU. NOT RUN BY `npm test` OR BY THE CPU BENCH.

PyTorch on CUDA with the same weights as `npm run bench:gpu-server`: the throughput a hand-written
dense network reaches with no HTTP, no JSON and the whole batch on the device. It is the ceiling the
GPU container server is compared with (issue 6, "GPU figures").

On a GPU machine, in one run:

    # 1. the container server on the GPU, batched and unbatched; keep the generated model
    BENCH_PROVIDERS=cuda BENCH_SAVE_MODEL=/tmp/bench-mlp.onnx npm run bench:gpu-server
    # 2. the PyTorch limit for the same file
    pip install torch onnx numpy
    python3 bench/gpu-reference.py /tmp/bench-mlp.onnx --concurrency 32

It prints rows/s at batch 1 and at batch = concurrency, and, given the server figures
(--server-batched, --server-unbatched, rows/s from step 1), the ratios for the README table.
"""

import argparse
import time

import numpy as np
import onnx
import torch
from onnx import numpy_helper


def load_mlp(path: str, device: torch.device):
    """The layers of a models/mlp.ts network: layer<i>.weight [in, out] and layer<i>.bias [out]."""
    model = onnx.load(path)
    weights = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    layers = []
    i = 0
    while f"layer{i}.weight" in weights:
        w = torch.from_numpy(np.ascontiguousarray(weights[f"layer{i}.weight"])).to(device)
        b = torch.from_numpy(np.ascontiguousarray(weights[f"layer{i}.bias"])).to(device)
        layers.append((w, b))
        i += 1
    if not layers:
        raise SystemExit(f"{path} is not an MLP from models/mlp.ts (no layer0.weight)")
    return layers


@torch.inference_mode()
def forward(layers, x):
    for index, (w, b) in enumerate(layers):
        x = torch.addmm(b, x, w)
        if index + 1 < len(layers):
            x = torch.relu(x)
    return x


def rows_per_second(layers, batch: int, width: int, device, seconds: float) -> float:
    x = torch.randn(batch, width, device=device)
    for _ in range(5):
        forward(layers, x)
    torch.cuda.synchronize()
    runs = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        forward(layers, x)
        runs += 1
        if runs % 10 == 0:
            torch.cuda.synchronize()
    torch.cuda.synchronize()
    return runs * batch / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="the ONNX file saved by BENCH_SAVE_MODEL")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--server-batched", type=float, help="rows/s of the batching server")
    parser.add_argument("--server-unbatched", type=float, help="rows/s of the server with batching off")
    args = parser.parse_args()

    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this reference needs an NVIDIA GPU")
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = False  # FP32 like onnxruntime's CUDA provider by default
    layers = load_mlp(args.model, device)
    width = layers[0][0].shape[0]
    print(f"PyTorch {torch.__version__} on {torch.cuda.get_device_name(0)}: {len(layers)} layers, input width {width}")

    rows = {
        1: rows_per_second(layers, 1, width, device, args.seconds),
        args.concurrency: rows_per_second(layers, args.concurrency, width, device, args.seconds),
    }
    limit = rows[args.concurrency]
    print("| what | rows/s | vs PyTorch batch %d |" % args.concurrency)
    print("|------|--------|------|")
    for batch, value in rows.items():
        print(f"| PyTorch CUDA, batch {batch} | {value:.0f} | {value / limit:.2f}x |")
    if args.server_unbatched:
        print(f"| container, batching off | {args.server_unbatched:.0f} | {args.server_unbatched / limit:.2f}x |")
    if args.server_batched:
        print(f"| container, batching on | {args.server_batched:.0f} | {args.server_batched / limit:.2f}x |")


if __name__ == "__main__":
    main()
