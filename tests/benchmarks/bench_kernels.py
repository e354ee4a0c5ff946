"""Kernel-level probes of the engine on the GPU (Qwen3-0.6B shape, random weights): where (a) and (c) go.

    python tests/benchmarks/bench_kernels.py        # on the GPU machine; ~2 minutes
    python tests/benchmarks/bench_kernels.py --parts products,saturation     # some of it

A script, not a test. It prints Markdown tables:
- the products with their element-wise stretch: cuBLAS + the separate Triton kernel vs the fused Triton
  products (``triton_kernels.GEMM_CONFIGS``), at the (a) batch's rows and at an embedding batch's;
- the residual add: a separate add + RMSNorm kernel vs the add in the cuBLAS epilogue (``addmm_``);
- attention, one layer: every Triton config (and a few more) on the (a) batch after its shared head, and on
  64 x 512-token chunks against dense cuDNN;
- under load: throughput of repeated saturation runs, and how busy the GPU was in one under the profiler;
- the timeline of one (a) forward and one embedding batch (``runner.run`` to the result on the host): host
  time before the first kernel, kernel time, idle gaps between kernels (the largest, with their neighbours),
  and the time from the last kernel to the host seeing the result.
Writes the tables to $OUT/bench_kernels.md when OUT is set.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers  # noqa: E402

from engine import triton_kernels as tk  # noqa: E402
from engine.attention import time_ms, uniform_attention  # noqa: E402
from engine.engine import Engine  # noqa: E402
from engine.runner import PackedQwen3  # noqa: E402
from tests.benchmarks.bench_engine import (  # noqa: E402
    NO,
    YES,
    Lengths,
    as_engine_runs,
    kernel_breakdown,
    saturate,
)
from tests.support.models import QWEN3_06B  # noqa: E402

VOCAB = int(QWEN3_06B["vocab_size"])
GPU_WORK = ("kernel", "gpu_memset", "gpu_memcpy")  # trace categories of work on the GPU
EXTRA_GEMM = {  # dropped: p128n64k64w4s4, p128n128k64w8s3/s4, p128n128k32w8s5, p64n128, p256n64, p256n128
    "pairs-m128n64k64w8s3g16": tk.GemmConfig(128, 64, 64, 8, 3, group=16),
    "pairs-m128n64k64w8s4": tk.GemmConfig(128, 64, 64, 8, 4),
    "pairs-m128n64k128w8s2": tk.GemmConfig(128, 64, 128, 8, 2),
    "pairs-m128n128k64w8s3g32": tk.GemmConfig(128, 128, 64, 8, 3, group=32),
}
EXTRA_ATTENTION = {
    "triton-gqa-m32n64": tk.AttentionConfig(32, 64, 4, 3, pack=True),
    "triton-gqa-m32n64s2": tk.AttentionConfig(32, 64, 4, 2, pack=True),
    "triton-gqa-m32n64w8": tk.AttentionConfig(32, 64, 8, 3, pack=True),
    "triton-gqa-m16n64": tk.AttentionConfig(16, 64, 4, 3, pack=True),
    "triton-gqa-m32n128": tk.AttentionConfig(32, 128, 4, 2, pack=True),
    "triton-gqa-m64n128w8": tk.AttentionConfig(64, 128, 8, 2, pack=True),
    "triton-gqa-m32n32s4": tk.AttentionConfig(32, 32, 4, 4, pack=True),
    "triton-m32n64": tk.AttentionConfig(32, 64, 4, 3),
    "triton-m64n128w8": tk.AttentionConfig(64, 128, 8, 2),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def products(runner: PackedQwen3, rows: int) -> list[str]:
    """gate/up + SwiGLU: cuBLAS then ``silu_mul`` vs the fused product; q/k norm + RoPE, rows per program."""
    w, layer = runner.w, runner.w.layers[0]
    h = torch.randn(rows, w.hidden, device="cuda").to(torch.bfloat16)
    gu = F.linear(h, layer.wgu)
    flops = 2 * rows * layer.wgu.shape[0] * layer.wgu.shape[1]
    pairs = layer.wgu  # the engine's gate/up weights are interleaved already
    gemm = time_ms(lambda: F.linear(h, layer.wgu))
    sep = time_ms(lambda: tk.silu_mul(gu))
    out = [
        f"| gate/up + SwiGLU, {rows} rows | cuBLAS {gemm:.3f} ({flops / gemm / 1e9:.0f} TF/s) + silu_mul "
        f"{sep:.3f} = {gemm + sep:.3f} |"
    ]
    for name, config in {**tk.GEMM_CONFIGS, **EXTRA_GEMM}.items():
        try:
            ms = time_ms(lambda config=config: tk.swiglu_gemm(h, pairs, config))
            out.append(
                f"| gate/up + SwiGLU, {rows} rows | fused {name}: {ms:.3f} ({flops / ms / 1e9:.0f} TF/s) |"
            )
        except Exception as exc:  # noqa: BLE001
            out.append(f"| gate/up + SwiGLU, {rows} rows | fused {name}: failed {type(exc).__name__} |")
    qkv = F.linear(h, layer.wqkv)
    positions = torch.randint(0, 512, (rows,), device="cuda")
    cos, sin = tk.rope_tables(w.inv_freq, w.max_positions)
    moved = 2 * 2 * rows * (w.heads + w.kv_heads) * w.head_dim  # q and k read and written, bf16
    for per in (4, 8, 16, 32):
        ms = time_ms(
            lambda per=per: tk.qk_norm_rope_(
                qkv, positions, cos, sin, layer.q_norm, layer.k_norm, w.heads, w.kv_heads, w.eps, rows=per
            )
        )
        rate = moved / ms / 1e6
        out.append(f"| q/k norm + RoPE, {rows} rows | {per} rows per program: {ms:.3f} ({rate:.0f} GB/s) |")
    return out


def residual(runner: PackedQwen3, rows: int) -> list[str]:
    w, layer = runner.w, runner.w.layers[0]
    x = torch.randn(rows, w.hidden, device="cuda").to(torch.bfloat16)
    a = torch.randn(rows, w.heads * w.head_dim, device="cuda").to(torch.bfloat16)
    sep = time_ms(lambda: tk.add_rms_norm_(x, F.linear(a, layer.wo), layer.ln2, w.eps))
    epi = time_ms(lambda: tk.rms_norm(x.addmm_(a, layer.wo.t()), layer.ln2, w.eps, torch.bfloat16))
    plain = time_ms(lambda: F.linear(a, layer.wo))
    return [
        f"| o_proj + residual + norm, {rows} rows | F.linear {plain:.3f}; + add_rms_norm_ {sep:.3f}; "
        f"addmm_ (add in the epilogue) + rms_norm {epi:.3f} |"
    ]


def attention_sweep(runner: PackedQwen3, segments, prefix_of) -> list[str]:
    w = runner.w
    tk.ATTENTION_CONFIGS.update(EXTRA_ATTENTION)
    out = []
    # (a) after its shared head
    lens = np.array([len(s) for s in segments])
    cu_np = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    n = int(cu_np[-1])
    qkv = torch.randn(n, (w.heads + 2 * w.kv_heads) * w.head_dim, device="cuda").to(torch.bfloat16)
    q, k, v = qkv.split([w.heads * w.head_dim, w.kv_heads * w.head_dim, w.kv_heads * w.head_dim], dim=1)
    q, k, v = (t.unflatten(1, (-1, w.head_dim)) for t in (q, k, v))
    cu = torch.from_numpy(cu_np).cuda()
    has = prefix_of >= 0
    table = np.stack([np.where(has, cu_np[np.where(has, prefix_of, 0)], 0), np.where(has, lens[0], 0)], 1)
    pre = torch.from_numpy(table.astype(np.int32)).cuda()
    for name, config in tk.ATTENTION_CONFIGS.items():
        items = torch.from_numpy(tk.attention_items(cu_np, config.block_m)).cuda()
        try:
            ms = time_ms(
                lambda config=config, items=items: tk.varlen_attention(q, k, v, cu, items, config, pre)
            )
            out.append(f"| (a) after the shared head, {n} rows | {name} | {ms:.3f} |")
        except Exception as exc:  # noqa: BLE001
            out.append(f"| (a) after the shared head | {name} | failed {type(exc).__name__} |")
    # embedding batch: 64 x 512
    b, length = 64, 512
    n = b * length
    qkv = torch.randn(n, (w.heads + 2 * w.kv_heads) * w.head_dim, device="cuda").to(torch.bfloat16)
    q, k, v = qkv.split([w.heads * w.head_dim, w.kv_heads * w.head_dim, w.kv_heads * w.head_dim], dim=1)
    q, k, v = (t.unflatten(1, (-1, w.head_dim)) for t in (q, k, v))
    cu_np = np.arange(0, n + 1, length, dtype=np.int32)
    cu = torch.from_numpy(cu_np).cuda()
    flops = 4 * b * w.heads * w.head_dim * length * (length + 1) / 2
    for name, config in tk.ATTENTION_CONFIGS.items():
        items = torch.from_numpy(tk.attention_items(cu_np, config.block_m)).cuda()
        try:
            ms = time_ms(lambda config=config, items=items: tk.varlen_attention(q, k, v, cu, items, config))
            out.append(f"| embed 64 x 512 | {name} | {ms:.3f} ({flops / ms / 1e9:.0f} TF/s) |")
        except Exception as exc:  # noqa: BLE001
            out.append(f"| embed 64 x 512 | {name} | failed {type(exc).__name__} |")
    for kernel in ("cudnn-gqa", "cudnn", "sdpa"):
        try:
            ms = time_ms(lambda kernel=kernel: uniform_attention(q, k, v, b, length, kernel))
            out.append(f"| embed 64 x 512 | dense {kernel} | {ms:.3f} ({flops / ms / 1e9:.0f} TF/s) |")
        except Exception as exc:  # noqa: BLE001
            out.append(f"| embed 64 x 512 | dense {kernel} | failed {type(exc).__name__} |")
    for name in EXTRA_ATTENTION:
        del tk.ATTENTION_CONFIGS[name]
    return out


def _trace(prof) -> tuple[list[dict], list[dict]]:
    """A profiler run's complete events, and of them the GPU's work, by start time."""
    path = Path(tempfile.mkdtemp()) / "trace.json"
    prof.export_chrome_trace(str(path))
    events = [e for e in json.loads(path.read_text())["traceEvents"] if e.get("ph") == "X"]
    return events, sorted((e for e in events if e.get("cat") in GPU_WORK), key=lambda e: e["ts"])


def timeline(runner: PackedQwen3, segments, prefix_of, label: str) -> list[str]:
    from torch.profiler import ProfilerActivity, profile, record_function

    with torch.inference_mode():
        for _ in range(3):
            runner.run(segments, prefix_of)[1].synchronize()
        with (
            profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof,
            record_function("probe.call"),
        ):
            t0 = time.perf_counter()
            _, event = runner.run(segments, prefix_of)
            event.synchronize()
            wall = (time.perf_counter() - t0) * 1e3
    events, gpu = _trace(prof)
    call = next(e for e in events if e.get("name") == "probe.call")
    launches = sorted((e for e in events if e.get("cat") == "cuda_runtime"), key=lambda e: e["ts"])
    start, end = call["ts"], call["ts"] + call["dur"]
    busy = sum(e["dur"] for e in gpu)
    gaps = []
    for a, b in zip(gpu, gpu[1:], strict=False):
        g = b["ts"] - (a["ts"] + a["dur"])
        if g > 0:
            gaps.append((g, a["name"][:40], b["name"][:40]))
    gaps.sort(reverse=True)
    first_launch = launches[0]["ts"] - start if launches else float("nan")
    rows = [
        f"| {label}: wall, run() to result on the host (profiled) | {wall:.2f} ms |",
        f"| {label}: host time before the first launch | {first_launch / 1e3:.2f} ms |",
        f"| {label}: first kernel starts after | {(gpu[0]['ts'] - start) / 1e3:.2f} ms |",
        f"| {label}: GPU busy (sum of {len(gpu)} kernels/copies) | {busy / 1e3:.2f} ms |",
        f"| {label}: idle gaps between them (sum; > 5 us: {sum(g > 5 for g, _, _ in gaps)}) | "
        f"{sum(g for g, _, _ in gaps) / 1e3:.2f} ms |",
        f"| {label}: last kernel end to the host seeing the result | "
        f"{(end - (gpu[-1]['ts'] + gpu[-1]['dur'])) / 1e3:.2f} ms |",
        f"| {label}: host enqueue ends (last launch) after | "
        f"{(launches[-1]['ts'] - start) / 1e3 if launches else float('nan'):.2f} ms |",
    ]
    rows += [f"| {label}: gap {g:.0f} us | after `{a}`, before `{b}` |" for g, a, b in gaps[:8]]
    return rows


def event_timeline(runner: PackedQwen3, segments, prefix_of, label: str, reps: int = 20) -> list[str]:
    """Without the profiler: CUDA events at the call, at the forward's entry (inputs on their way) and
    after the result's copy, against host clocks; medians over ``reps`` calls."""
    forward = runner.forward
    marks: dict[str, torch.cuda.Event] = {}

    def timed_forward(*args, **kwargs):  # type: ignore[no-untyped-def]
        marks["forward"] = torch.cuda.Event(enable_timing=True)
        marks["forward"].record()
        return forward(*args, **kwargs)

    runner.forward = timed_forward  # type: ignore[method-assign]
    rows: dict[str, list[float]] = {}
    try:
        with torch.inference_mode():
            for _ in range(reps + 3):
                torch.cuda.synchronize()
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                t0 = time.perf_counter()
                start.record()
                _, done = runner.run(segments, prefix_of)
                t1 = time.perf_counter()
                end.record()
                end.synchronize()
                t2 = time.perf_counter()
                for key, value in (
                    ("host: call to launches done", (t1 - t0) * 1e3),
                    ("host: call to result", (t2 - t0) * 1e3),
                    ("GPU clock: call to forward entry (host preparation, inputs copied)",
                     start.elapsed_time(marks["forward"])),
                    ("GPU clock: forward entry to result copied", marks["forward"].elapsed_time(end)),
                ):  # fmt: skip
                    rows.setdefault(key, []).append(value)
    finally:
        runner.forward = forward  # type: ignore[method-assign]
    return [f"| {label}: {key} | {float(np.median(v[3:])):.2f} ms |" for key, v in rows.items()]


def _compiled() -> dict[str, int]:
    """Compiled variants per Triton kernel of ``triton_kernels``."""
    out = {}
    for name in dir(tk):
        fn = getattr(tk, name)
        caches = getattr(fn, "device_caches", None)
        if caches is not None:
            out[name] = sum(len(c[0]) for c in caches.values())
    return out


def first_batches(engine: Engine, requests: list, label: str) -> list[str]:
    """The first full batches after warm-up: wall per request, and what they compiled or allocated."""
    before, segments = _compiled(), torch.cuda.memory_stats().get("segment.all.allocated", 0)
    times = []
    for request in requests:
        t0 = time.perf_counter()
        engine.run(request)
        times.append((time.perf_counter() - t0) * 1e3)
    after = _compiled()
    new = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    grown = torch.cuda.memory_stats().get("segment.all.allocated", 0) - segments
    return [
        f"| {label}: first requests after warm-up, ms each | " + ", ".join(f"{t:.1f}" for t in times) + " |",
        f"| {label}: Triton variants compiled by them | {new or 'none'} |",
        f"| {label}: device memory segments allocated by them | {grown} |",
    ]


def saturation(engine: Engine, requests: list, label: str, repeats: int = 3) -> list[str]:
    """Throughput of ``repeats`` saturation runs (8 clients), then one under the profiler (CUDA activity
    only): how much of the wall the GPU was busy, and the kernel time per batch under load."""
    from torch.profiler import ProfilerActivity, profile

    tokens = sum(len(s) for r in requests for s in r)
    rates = [saturate(engine, requests, clients=8) for _ in range(repeats)]
    batches = engine.stats.batches
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        saturate(engine, requests, clients=8)
        wall = time.perf_counter() - t0
    batches = engine.stats.batches - batches
    gpu = [(e["ts"], e["ts"] + e["dur"]) for e in _trace(prof)[1]]
    union, reach = 0.0, -1.0
    for a, b in gpu:
        if b > reach:
            union += b - max(a, reach)
            reach = b
    span = (gpu[-1][1] - gpu[0][0]) if gpu else float("nan")
    busy = sum(b - a for a, b in gpu)
    return [
        f"| {label}: saturation, {len(requests)} requests, {tokens} tokens, {repeats} runs | "
        + ", ".join(f"{r / 1e3:.0f}k" for r in rates)
        + " tok/s |",
        f"| {label}: profiled run: wall / first to last kernel / GPU busy (union) | {wall * 1e3:.0f} / "
        f"{span / 1e3:.0f} / {union / 1e3:.0f} ms ({100 * union / span:.1f}% of the span) |",
        f"| {label}: profiled run: {batches} batches, kernel time per batch | "
        f"{busy / 1e3 / max(1, batches):.2f} ms |",
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", default="first,products,attention,timeline,saturation,breakdown")
    parts = set(ap.parse_args().parts.split(","))
    torch.backends.cuda.matmul.allow_tf32 = False
    log(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    torch.manual_seed(0)
    with torch.device("cuda"):
        causal = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**QWEN3_06B))
    causal = causal.to(torch.bfloat16).eval()
    rerank = Engine(causal, head="score", head_token_ids=(NO, YES), device="cuda", dtype=torch.bfloat16)
    rerank.warm_up()
    embed = Engine(causal.model, head="embedding", device="cuda", dtype=torch.bfloat16)
    embed.warm_up()
    r, e = rerank.runner, embed.runner
    log(f"rerank: gate/up {r.mlp_gemm}; timings {r.product_timings}")
    log(f"embed: gate/up {e.mlp_gemm}; attention {e.attention} / {e.uniform}")
    lengths = Lengths(None)
    a_seqs = lengths.pairs(lengths.draw(50), VOCAB)
    segments, prefix_of = as_engine_runs(r, a_seqs)
    e_seqs = lengths.seqs([512] * 64, VOCAB)
    lines = [
        f"{torch.cuda.get_device_name()}, torch {torch.__version__}; warm-up chose: rerank gate/up "
        f"{r.mlp_gemm or 'cublas'}, attention {r.attention}; embed gate/up "
        f"{e.mlp_gemm or 'cublas'}, attention {e.attention} (equal lengths "
        f"{e.uniform}). Warm-up timings (ms, 4096 + 16384 rows): "
        + ", ".join(f"{k} {v:.3f}" for k, v in r.product_timings.items()),
        "",
        "| element-wise stretches, one layer | ms |",
        "| --- | --- |",
    ]
    a_rows = sum(map(len, segments))
    if "first" in parts:
        first = ["", "| after warm-up | |", "| --- | --- |"]
        first += first_batches(embed, [lengths.seqs([512] * 64, VOCAB) for _ in range(4)], "embed 64 x 512")
        first += first_batches(
            embed, [lengths.seqs(lengths.draw(64), VOCAB) for _ in range(3)], "embed mixed"
        )
        first += first_batches(rerank, [lengths.pairs(lengths.draw(50), VOCAB) for _ in range(3)], "(a)")
        print("\n".join(first), flush=True)  # as it comes: the rest may take minutes
        lines += first
    with torch.inference_mode():
        if "products" in parts:
            for rows in (a_rows, 32768):
                swept = products(r, rows)
                print("\n".join(swept), flush=True)
                lines += swept
            lines += residual(r, a_rows) + residual(r, 32768)
        if "attention" in parts:
            lines += ["", "| attention, one layer | kernel | ms |", "| --- | --- | --- |"]
            lines += attention_sweep(r, segments, prefix_of)
    if "timeline" in parts:
        lines += ["", "| timeline | |", "| --- | --- |"]
        lines += event_timeline(r, segments, prefix_of, "(a)")
        lines += event_timeline(e, e_seqs, None, "embed 64 x 512")
        lines += timeline(r, segments, prefix_of, "(a)")
        lines += timeline(e, e_seqs, None, "embed 64 x 512")
    if "saturation" in parts:
        lines += ["", "| under load (8 clients, two requests in flight each) | |", "| --- | --- |"]
        lines += saturation(embed, [lengths.seqs([512] * 32, VOCAB) for _ in range(72)], "embed 32 x 512")
        lines += saturation(rerank, [lengths.pairs(lengths.draw(50), VOCAB) for _ in range(96)], "rerank")
    if "breakdown" in parts:
        lines += ["", "| kernel time, one embedding batch (64 x 512) | ms |", "| --- | --- |"]
        lines += [f"| {name} | {ms:.2f} |" for name, ms in kernel_breakdown(e, e_seqs, share=False)]
        lines += ["", "| kernel time, one (a) forward | ms |", "| --- | --- |"]
        lines += [f"| {name} | {ms:.2f} |" for name, ms in kernel_breakdown(r, a_seqs)]
    table = "\n".join(lines)
    print("\n" + table, flush=True)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "bench_kernels.md").write_text(table + "\n")
    rerank.close()
    embed.close()


if __name__ == "__main__":
    main()
