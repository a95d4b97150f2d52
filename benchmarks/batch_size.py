"""How many copies of an input to run through the network at once on this device: time per copy against batch size.

Run: ``nice -n 5 .venv/bin/python benchmarks/batch_size.py`` (``--help`` for options). The bundled
demo UNet (or ``--model CARD``) on random inputs of its channels and each ``--sides`` cube: for each
batch size, the milliseconds per copy of a forward pass (what occlusion, KernelSHAP and the Trust
measures run) and of a forward plus backward pass of one class's summed logits to the input's
gradient (what Integrated Gradients and SmoothGrad run), interleaved over ``--repeats`` rounds, median per size; each timed
pass follows an untimed one of the same shape (a method's batches repeat one shape, and the first
pass of a new shape builds its kernels). Beside each: the batch ``core.attribution.batching.samples_per_batch`` picks for that input
(as occlusion asks it: forward only; as Integrated Gradients asks it: with gradients and its
per-copy maps), so the rule can be read against the measured optimum. The network is built as
``build_network`` builds it, so a batch of one runs on oneDNN (``core/model/lone_copy.py``); torch's
own kernel choice for one copy is timed by ``benchmarks/lone_copy.py``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def per_copy_ms(network: torch.nn.Module, x: torch.Tensor, with_gradients: bool, weights: bool = False) -> float:
    """Milliseconds per copy of one pass of the batch ``x`` (forward, or forward and backward).

    The backward pass computes the input's gradient only, as the attribution methods do (their
    networks' parameters are frozen), or with ``weights`` the parameters' gradients too (as TracIn
    and training do).
    """
    start = time.perf_counter()
    if with_gradients:
        x = x.clone().requires_grad_(True)
        wanted = [x] + ([p for p in network.parameters() if p.requires_grad] if weights else [])
        torch.autograd.grad(network(x)[:, 1].sum(), wanted)
    else:
        with torch.inference_mode():
            network(x)
    return 1000 * (time.perf_counter() - start) / x.shape[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="a model card (default: the bundled demo card)")
    parser.add_argument("--sides", default="32,48,64",
                        help="input cube sides or AxBxC shapes (default 32,48,64; 96x128x128 is the crop "
                             "occlusion, KernelSHAP and meaningful perturbation run on the full-size case)")
    parser.add_argument("--batches", default="1,2,4,8,16,32,64", help="batch sizes (default 1,2,4,8,16,32,64)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (default 3)")
    args = parser.parse_args()

    from napari_segxai.core.attribution.batching import samples_per_batch
    from napari_segxai.core.model.card import build_network, default_model_card
    from napari_segxai.core.model.loading import load_model_card

    card = load_model_card(args.model) if args.model else default_model_card()
    network = build_network(card, "cpu").eval()
    sizes = [int(b) for b in args.batches.split(",")]
    print(f"{platform.machine()} ({platform.processor() or 'cpu'}), {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), load average {os.getloadavg()[0]:.2f} at the start; model {card.name}")
    for side in args.sides.split(","):
        spatial = tuple(int(v) for v in side.split("x")) if "x" in side else (int(side),) * card.spatial_dims
        shape = (len(card.modalities),) + spatial
        x = torch.randn((max(sizes),) + shape)
        picked = {False: samples_per_batch(network, x[:1], 10_000, with_gradients=False),
                  True: samples_per_batch(network, x[:1], 10_000, with_gradients=True, maps_per_sample=3)}
        for with_gradients in (False, True):
            times: dict[int, list[float]] = {n: [] for n in sizes}
            for _ in range(args.repeats):
                for n in sizes:
                    # a method runs batches of one shape: the first pass of a new shape (oneDNN builds its
                    # kernels for it) is not timed, as a method's later batches do not pay it
                    per_copy_ms(network, x[:n], with_gradients)
                    times[n].append(per_copy_ms(network, x[:n], with_gradients))
            medians = {n: statistics.median(v) for n, v in times.items()}
            best = min(medians, key=medians.get)
            row = ", ".join(f"{n}: {medians[n]:.1f}" for n in sizes)
            kind = "forward + backward" if with_gradients else "forward"
            print(f"{'x'.join(map(str, spatial))} {kind}, ms per copy (median of {args.repeats}) by batch: {row}; "
                  f"fastest {best}; samples_per_batch picks {picked[with_gradients]}", flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
