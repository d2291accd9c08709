"""Embedding-runtime benchmark: one pass of CAM++'s frame network on PyTorch and on ONNX
Runtime, side by side in one process (issue #15).

    python -m benchmarks embedding [--frames 150,400,1000,3000] [--threads 1,2]
                                   [--repeats 5] [--out FILE] [--table FILE]

Input: fbank frames of the real sample call (the first T frames, repeated when T is longer
than the call), mean-normalised as the diarizer feeds them. Per length and thread count:
the median wall time of `repeats` passes after two warm-up passes for each runtime, their
ratio, and the largest difference of the outputs relative to PyTorch's largest value.
ONNX Runtime picks its kernels' instruction set from the CPU and has no setting to lower
it, so the environment caps (`--isa avx2` of the pipeline benchmark) do not reach it;
``python -m benchmarks.isa avx2-cpuid python -m benchmarks embedding`` hides AVX-512 from
CPUID and gives both runtimes' AVX2 figures (`benchmarks.isa`).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Optional, Sequence

from benchmarks import finish, machine_info, machine_stamp, output_arguments, reprinted

NAME = "embedding"


def _median_seconds(call: Any, repeats: int) -> float:
    for _ in range(2):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(frames: Sequence[int], threads: Sequence[int], repeats: int) -> list[dict[str, Any]]:
    """One row per (frames, threads): PyTorch and ONNX Runtime medians, ratio, difference."""
    import soundfile as sf
    import torch

    from workbench.engine.diarization.embedding import CAMPPlusEmbedding
    from workbench.research.datasets import sample_call

    waveform, _ = sf.read(str(sample_call().audio), dtype="float32")
    torch_model = CAMPPlusEmbedding.from_state_dict_file(runtime="torch")
    onnx_model = CAMPPlusEmbedding.from_state_dict_file(runtime="onnx")
    before = torch.get_num_threads()
    rows = []
    try:
        with torch.inference_mode():
            fbank = torch_model.compute_fbank(torch.from_numpy(waveform)[None])
            for count in threads:
                torch.set_num_threads(count)
                for length in frames:
                    reps = -(-length // fbank.shape[0])
                    x = fbank.repeat(reps, 1)[:length]
                    reference = torch_model.frame_features(x)
                    output = onnx_model.frame_features(x)
                    difference = float((output - reference).abs().max()
                                       / reference.abs().max())
                    t_torch = _median_seconds(lambda: torch_model.frame_features(x), repeats)
                    t_onnx = _median_seconds(lambda: onnx_model.frame_features(x), repeats)
                    rows.append({"frames": length, "threads": count,
                                 "torch_ms": round(t_torch * 1000, 2),
                                 "onnx_ms": round(t_onnx * 1000, 2),
                                 "ratio": round(t_torch / t_onnx, 3),
                                 "relative_difference": difference})
    finally:
        torch.set_num_threads(before)
    return rows


def table(results: dict[str, Any]) -> str:
    lines = [f"Machine: {machine_stamp(results['machine'])}", "",
             "| fbank frames | threads | PyTorch ms | ONNX Runtime ms | ratio | max relative difference |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in results["rows"]:
        lines.append(f"| {r['frames']} | {r['threads']} | {r['torch_ms']:.1f} | "
                     f"{r['onnx_ms']:.1f} | **{r['ratio']:.2f}x** | "
                     f"{r['relative_difference']:.1e} |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks embedding",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--frames", default="150,400,1000,3000",
                        help="comma-separated input lengths in fbank frames (10 ms)")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--repeats", type=int, default=5)
    output_arguments(parser, NAME)
    args = parser.parse_args(argv)
    if reprinted(args, table, NAME):
        return 0
    try:
        frames = [int(v) for v in args.frames.split(",")]
        threads = [int(v) for v in args.threads.split(",")]
    except ValueError:
        parser.error("--frames and --threads take comma-separated integers")
    if min(frames) < 30 or min(threads) < 1 or args.repeats < 1:
        parser.error("need --frames >= 30 (the network's receptive field), --threads >= 1, "
                     "--repeats >= 1")
    results = {"benchmark": NAME, "machine": machine_info(),
               "parameters": {"frames": frames, "threads": threads, "repeats": args.repeats},
               "rows": measure(frames, threads, args.repeats)}
    finish(args.out, results, table(results))
    return 0
