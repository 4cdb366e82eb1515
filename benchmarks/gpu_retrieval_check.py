"""GPU check for issue 6: batched exact top-50 at 1M items on CUDA (float16) vs torch on this machine's CPU.

Run by benchmarks/gpu_check.sh on a machine with a GPU; prints a clear SKIP and exits 0 without one.
Times on the GPU are CUDA events; the limits (float16 matrix-product FLOP rate, device memory bandwidth)
are measured in the same run. Writes JSON to $OUT (or benchmarks/results/retrieval/) when it can.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

N_ITEMS, N_QUERIES, DIM, K = 1_000_000, 1000, 384, 50


def cuda_time(fn, repeat: int = 5) -> float:
    """Best of `repeat` runs, seconds, measured with CUDA events after one warm-up."""
    fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeat):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        torch.cuda.synchronize()
        best = min(best, start.elapsed_time(stop) / 1000)
    return best


def main() -> int:
    if not torch.cuda.is_available():
        print("SKIP gpu_retrieval_check: torch sees no CUDA device (torch %s)" % torch.__version__)
        return 0
    from scenerec.stores.scene_index import CPUSceneIndex, CUDASceneIndex

    n_items = int(os.environ.get("GPU_CHECK_ITEMS", N_ITEMS))
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n_items, DIM), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = rng.standard_normal((N_QUERIES, DIM), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    ids = [f"s{j:07d}" for j in range(n_items)]
    report: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
                    "items": n_items, "queries": N_QUERIES, "k": K, "cpu_threads": torch.get_num_threads()}

    # limits, measured here
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
    t = cuda_time(lambda: a @ a)
    report["fp16_matmul_tflops"] = round(2 * 8192**3 / t / 1e12, 1)
    big = torch.empty(2 * 2**30 // 2, device="cuda", dtype=torch.float16)
    t = cuda_time(lambda: big.clone())
    report["copy_bandwidth_gbs"] = round(2 * big.numel() * 2 / t / 1e9, 1)  # read + write
    del a, big

    gpu = CUDASceneIndex(ids, vectors)
    report["gpu_chunk"] = gpu.chunk_size
    t_gpu = cuda_time(lambda: gpu.search(queries, K))  # includes the host round trip of the results
    q = torch.from_numpy(queries).cuda()
    t_select = cuda_time(lambda: gpu._select(q, K + gpu.rescore_margin, None))
    flop, bytes_read = 2 * N_QUERIES * n_items * DIM, n_items * DIM * 2
    report["gpu_search_s"] = round(t_gpu, 5)
    report["gpu_select_only_s"] = round(t_select, 5)
    report["gpu_tflops"] = round(flop / t_gpu / 1e12, 2)
    report["fraction_of_fp16_matmul"] = round(flop / t_gpu / 1e12 / report["fp16_matmul_tflops"], 3)
    report["fraction_of_bandwidth"] = round(bytes_read / t_gpu / 1e9 / (report["copy_bandwidth_gbs"] / 2), 3)

    cpu = CPUSceneIndex(ids, vectors)
    cpu.search(queries[:8], K)
    start = time.perf_counter()
    exact = cpu.search(queries, K)
    report["cpu_search_s"] = round(time.perf_counter() - start, 3)
    report["gpu_speedup_over_cpu"] = round(report["cpu_search_s"] / t_gpu, 1)
    half = gpu.search(queries, K)
    overlap = [len(set(a) & set(b)) / K for a, b in zip(exact.indices.tolist(), half.indices.tolist())]
    report["recall_at_50_vs_cpu_exact"] = round(float(np.mean(overlap)), 4)
    report["max_score_diff_vs_cpu"] = float(np.abs(half.scores - exact.scores).max())
    report["targets"] = {"speedup >= 100x": report["gpu_speedup_over_cpu"] >= 100,
                         ">= 50% of the binding limit": max(report["fraction_of_fp16_matmul"],
                                                            report["fraction_of_bandwidth"]) >= 0.5}
    print(json.dumps(report, indent=2))
    out = Path(os.environ.get("OUT") or Path(__file__).parent / "results" / "retrieval")
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_retrieval_check.json").write_text(json.dumps(report, indent=2) + "\n")
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
