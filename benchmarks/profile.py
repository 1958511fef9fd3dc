"""python -m benchmarks.profile: where one Jacobian-mode evaluation spends its time.

On the lung CT pair with M730 (1000 samples of 5x5x5 patches at 1.5 mm), it times the stages the
engine runs, each with the engine's own kernels: patch sampling (fixed; moving with index
gradients), the fixed forward pass, the moving forward + backward pass, the chain rule, and the
whole engine evaluation; in float32 and, when this CPU has native bfloat16, under bfloat16 autocast.
Prints a table; the model-work floor is the patches' FLOPs at this machine's float32 GEMM rate.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np
import torch
from impact_elastix import _core
from impact_elastix.mha import read_mha

from examples.testing_data import elastix_testing_data

from .measure import gemm_rate, model_flops


def _best(f: Callable[[], object], repeats: int) -> float:
    f()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return min(times)


def _image(name: str) -> tuple[torch.Tensor, dict]:
    values, g = read_mha(elastix_testing_data() / name)
    image = torch.from_numpy(values.astype(np.float32))
    image = (image - image.mean()) / image.std()
    geometry = {
        "size": [int(v) for v in g.size],
        "origin": [float(v) for v in g.origin],
        "spacing": [float(v) for v in g.spacing],
        "direction": [float(v) for v in g.direction.reshape(-1)],
    }
    return image, geometry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    fixed, fg = _image("3DCT_lung_baseline.mha")
    moving, mg = _image("3DCT_lung_followup.mha")
    model_path = elastix_testing_data() / "M730_1_Layers.pt"
    model = torch.jit.load(str(model_path)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    n, patch, voxel = args.samples, [5, 5, 5], [1.5, 1.5, 1.5]
    rng = torch.Generator().manual_seed(0)
    size = torch.tensor(fg["size"], dtype=torch.float64)
    index = 10 + torch.rand(n, 3, generator=rng, dtype=torch.float64) * (size - 21)
    x = torch.tensor(fg["origin"], dtype=torch.float64) + index * torch.tensor(fg["spacing"], dtype=torch.float64)
    y = x + 0.7
    axes = torch.eye(3, dtype=torch.float64)
    fixed_c = _core.bspline_coefficients(fixed.unsqueeze(-1))
    moving_c = _core.bspline_coefficients(moving.unsqueeze(-1))
    shape = (n, 1, 5, 5, 5)

    def sample_fixed() -> torch.Tensor:
        return _core.sample_patches(fixed_c, fg, x, patch, voxel, axes, False)[0].view(shape)

    def sample_moving() -> tuple[torch.Tensor, torch.Tensor]:
        values, gradient, _ = _core.sample_patches(moving_c, mg, y, patch, voxel, axes, True)
        return values.view(shape), gradient

    fixed_patch, (moving_patch, index_gradient) = sample_fixed(), sample_moving()
    forward, backward = model_flops(model_path, tuple(patch))
    gemm = gemm_rate()
    floor = (2 * n * forward + n * backward) / 1e9 / gemm
    params = {"ModelsPath": [str(model_path)], "SubsetFeatures": ["0"], "Distance": ["L2"]}
    rows = []
    precisions: list[tuple[str, torch.dtype | None]] = [("float32", None)]
    flags = open("/proc/cpuinfo").read().split()
    if "avx512_bf16" in flags or "amx_bf16" in flags or os.environ.get("IMPACT_CPU_BFLOAT16") == "1":
        precisions.append(("bfloat16 autocast", torch.bfloat16))
    for label, dtype in precisions:

        def fixed_forward(dtype: torch.dtype | None = dtype) -> torch.Tensor:
            with torch.no_grad(), torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                return model(fixed_patch)[0].float()

        target = fixed_forward()

        def moving_forward_backward(dtype: torch.dtype | None = dtype, target: torch.Tensor = target) -> torch.Tensor:
            leaf = moving_patch.detach().requires_grad_(True)
            with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                features = model(leaf)[0]
            loss = (features.float() - target).square().mean()
            return torch.autograd.grad(loss, leaf)[0]

        d_patch = moving_forward_backward()
        engine_params = params | ({"UseMixedPrecision": ["true"]} if dtype is not None else {})
        engine = _core.Engine(engine_params, 0, fixed, fg, moving, mg)
        stages = {
            "sample fixed patches": _best(sample_fixed, args.repeats),
            "sample moving patches + index gradients": _best(sample_moving, args.repeats),
            "model: fixed forward": _best(fixed_forward, args.repeats),
            "model: moving forward + input gradient": _best(moving_forward_backward, args.repeats),
            "chain rule to dS/dy": _best(
                lambda d=d_patch: _core.chain_patch_gradient(d.reshape(n, -1), index_gradient, mg), args.repeats
            ),
        }
        total = _best(lambda e=engine: e.evaluate(x, y, True), args.repeats)
        rows.append((label, stages, total))
    print(f"Jacobian mode, one evaluation: lung CT pair, M730, {n} samples of 5x5x5 at 1.5 mm, {args.threads} threads")
    print(f"model-work floor {floor * 1000:.0f} ms ({gemm:.0f} GFLOP/s float32 GEMM)\n")
    header = "| stage | " + " | ".join(f"{label} ms" for label, _, _ in rows) + " |"
    print(header)
    print("|---" * (len(rows) + 1) + "|")
    for stage in rows[0][1]:
        print(f"| {stage} | " + " | ".join(f"{r[1][stage] * 1000:.1f}" for r in rows) + " |")
    print("| **engine.evaluate (all of the above and bookkeeping)** | "
          + " | ".join(f"**{r[2] * 1000:.1f}**" for r in rows) + " |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
