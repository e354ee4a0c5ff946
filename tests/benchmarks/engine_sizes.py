"""``bench_engine.py --size 0.6b,4b,8b``: (a) and (c) for the reranker and the embedder at each Qwen3 size.

Per size (random weights of the real shape, ``tests.support.models.SIZES``; ``--tiny``: the tiny config with
that size's ratios, ``TINY_SIZES``), one model is built on the device in bf16, a reranking engine and an
embedding engine are built from it and warmed up, and the model is dropped, so the engines' weights are
all the size holds (reported per engine, with ``qwen3_math.expected_weight_bytes``; the device memory
allocated is less than their sum: built from one bf16 model on the device, both engines keep the tensors
they take unchanged, the embeddings, o_proj and down_proj, as the same storage). Rows:

- rerank (a): one query x 50 pairs (``Lengths.pairs``: the shared template head, ~300 tokens each), p50/p95;
- rerank (c): saturation, 8 clients with two requests of 50 pairs in flight each;
- embed (a): one request of 50 chunks of the same lengths (no shared head), p50/p95;
- embed (c): saturation, 8 clients with requests of 32 chunks of 512 tokens.

Each row gives TFLOP/s and its share of the bf16 8192^3 matmul rate measured at the start of the run. FLOPs
are what the engine computes (``model_flops(last_rows_only=True)``: the shared head once, the last layer's
attention and MLP for the rows read out only), from the config. Iterations scale down with the size
(``--quick``: fewer), so all three sizes run in a few minutes on an H200. No transformers reference here
(the full table at 0.6B has it); ``--fp8`` and ``--variants`` apply to the full table only.
"""

from __future__ import annotations

import gc
import time

import numpy as np
import torch
import transformers

from engine.engine import Engine
from engine.qwen3_math import expected_weight_bytes, weight_bytes
from tests.benchmarks.engine_workloads import (
    NO,
    YES,
    Lengths,
    as_engine_runs,
    latencies,
    log,
    model_flops,
    pct,
    saturate,
)
from tests.support.models import SIZES, TINY_SIZES

# per size: (a) iterations, rerank (c) requests, embed (c) requests; --quick halves them (at least 2)
PLAN = {"0.6b": (30, 48, 48), "4b": (16, 24, 24), "8b": (10, 16, 16)}


def parse_sizes(values: list[str]) -> list[str]:
    """``--size`` values (repeatable, or comma lists) in order, each once; unknown ones refused."""
    sizes: list[str] = []
    for value in values:
        for given in value.lower().split(","):
            size = given.strip()
            if not size:
                continue
            size = {"06b": "0.6b", "0.6": "0.6b", "4": "4b", "8": "8b"}.get(size, size)
            if size not in SIZES:
                raise SystemExit(f"--size {size!r}: one of {', '.join(SIZES)}")
            if size not in sizes:
                sizes.append(size)
    return sizes


def _bytes(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def _engines(cfg: dict, dev: str, budget: int, options: dict) -> tuple[Engine, Engine, float, float, int]:
    """The reranking and embedding engines of one random model; the model itself is dropped."""
    torch.manual_seed(0)
    with torch.device(dev):
        causal = transformers.Qwen3ForCausalLM._from_config(
            transformers.Qwen3Config(**cfg), dtype=torch.bfloat16
        ).eval()
    common = {"device": dev, "token_budget": budget, "dtype": torch.bfloat16, **options}
    t0 = time.perf_counter()
    rerank = Engine(causal, head="score", head_token_ids=(NO, YES), **common)
    rerank.warm_up()
    t1 = time.perf_counter()
    embed = Engine(causal.model, head="embedding", **common)
    embed.warm_up()
    t2 = time.perf_counter()
    del causal
    gc.collect()
    held = 0
    if dev.startswith("cuda"):
        torch.cuda.empty_cache()
        held = torch.cuda.memory_allocated()
    return rerank, embed, t1 - t0, t2 - t1, held


def size_rows(size: str, tiny: bool, dev: str, budget: int, options: dict, peak: float, quick: bool,
              scifact: str | None) -> list[str]:  # fmt: skip
    cfg = TINY_SIZES[size] if tiny else SIZES[size]
    iters, n_rerank, n_embed = PLAN[size]
    if quick or not dev.startswith("cuda"):
        iters, n_rerank, n_embed = (max(2, n // (2 if dev.startswith("cuda") else 8)) for n in PLAN[size])
    log(f"{size}: building the model and its two engines")
    rerank, embed, warm_r, warm_e, allocated = _engines(cfg, dev, budget, options)
    runner = rerank.runner
    vocab = int(cfg["vocab_size"])
    lengths = Lengths(scifact)

    def tf(flops: float, seconds: float) -> str:
        rate = flops / seconds / 1e12
        return f"{rate:,.{0 if rate >= 10 else 2}f} | {100 * rate / peak:.0f}%"

    # rerank (a): one query's 50 pairs; FLOPs as the engine runs them (the shared head once)
    a_inputs = [lengths.pairs(lengths.draw(50), vocab) for _ in range(iters)]
    a_lat = latencies(rerank.run, a_inputs, 2, dev)
    a_done = [[len(s) for s in as_engine_runs(runner, x)[0]] for x in a_inputs]
    a_flops = float(np.mean([model_flops(x, cfg, last_rows_only=True) for x in a_done]))
    # rerank (c): FLOPs per submitted token scaled by the tokens computed (the shared head once per batch)
    r_reqs = [lengths.pairs(lengths.draw(50), vocab) for _ in range(n_rerank)]
    before = (rerank.stats.tokens, rerank.stats.served_tokens)
    r_rate = saturate(rerank, r_reqs, clients=8)
    computed = (rerank.stats.tokens - before[0]) / max(1, rerank.stats.served_tokens - before[1])
    r_tokens = [len(s) for r in r_reqs for s in r]
    r_per_tok = model_flops(r_tokens, cfg, last_rows_only=True) / sum(r_tokens) * computed
    # embed (a): one request of 50 chunks of the (a) lengths; (c): 512-token chunks, 32 per request
    e_inputs = [lengths.seqs(lengths.draw(50), vocab) for _ in range(iters)]
    e_lat = latencies(embed.run, e_inputs, 2, dev)
    e_flops = float(np.mean([model_flops(list(map(len, x)), cfg, last_rows_only=True) for x in e_inputs]))
    e_reqs = [lengths.seqs([512] * 32, vocab) for _ in range(n_embed)]
    e_rate = saturate(embed, e_reqs, clients=8)
    e_per_tok = model_flops([512], cfg, last_rows_only=True) / 512
    log(
        f"{size}: rerank (a) p50 {pct(a_lat, 50):.1f} ms, (c) {r_rate:,.0f} tok/s; "
        f"embed (a) p50 {pct(e_lat, 50):.1f} ms, (c) {e_rate:,.0f} tok/s"
    )
    label = f"{size.upper()}{' (tiny)' if tiny else ''}"
    held_r, held_e = weight_bytes(runner.w), weight_bytes(embed.runner.w)
    expected = expected_weight_bytes(cfg, "score") + expected_weight_bytes(cfg, "embedding")
    rows = [
        f"| {label} | rerank (a) 1 query x 50 pairs, p50 (p95), {iters} queries | "
        f"{pct(a_lat, 50):.1f} ms ({pct(a_lat, 95):.1f}) | {tf(a_flops, pct(a_lat, 50) / 1e3)} |",
        f"| {label} | rerank (c) saturation, 8 clients, {n_rerank} requests of 50 pairs (computed/submitted "
        f"tokens {computed:.2f}) | {r_rate / 1e3:,.0f}k tok/s | {tf(r_per_tok * r_rate, 1)} |",
        f"| {label} | embed (a) 1 request x 50 chunks of the (a) lengths, p50 (p95) | "
        f"{pct(e_lat, 50):.1f} ms ({pct(e_lat, 95):.1f}) | {tf(e_flops, pct(e_lat, 50) / 1e3)} |",
        f"| {label} | embed (c) saturation, 8 clients, {n_embed} requests of 32 x 512 tokens | "
        f"{e_rate / 1e3:,.0f}k tok/s | {tf(e_per_tok * e_rate, 1)} |",
        f"| {label} | setup: attention `{runner.attention}`, gate/up `{runner.mlp_gemm or 'cublas'}` (embed "
        f"`{embed.runner.mlp_gemm or 'cublas'}`), warm-up {warm_r:.0f} s / {warm_e:.0f} s; weights held "
        f"{_bytes(held_r)} + {_bytes(held_e)} (expected {_bytes(expected)}), device memory allocated after "
        f"warm-up {_bytes(allocated)} | | | |",
    ]
    rerank.close()
    embed.close()
    del rerank, embed, runner
    gc.collect()
    if dev.startswith("cuda"):
        torch.cuda.empty_cache()
    return rows


def run_sizes(sizes: list[str], tiny: bool, dev: str, budget: int, options: dict, peak: float, quick: bool,
              scifact: str | None) -> list[str]:  # fmt: skip
    device = torch.cuda.get_device_name() if dev.startswith("cuda") else "cpu"
    lines = [
        f"Qwen3 sizes, random weights of each shape{' (tiny configs with their ratios)' if tiny else ''}, "
        f"{device}, torch {torch.__version__}; engines bf16, token budget {budget}; bf16 matmul "
        f"{8192 if dev.startswith('cuda') else 512}^3 in this run: {peak:.2f} TFLOP/s (the % column). FLOPs: "
        "what the engine computes, from the config.",
        "",
        "| size | workload | engine | TFLOP/s | % of matmul |",
        "| --- | --- | --- | --- | --- |",
    ]
    for size in sizes:
        started = time.perf_counter()
        lines += size_rows(size, tiny, dev, budget, options, peak, quick, scifact)
        log(f"{size}: {time.perf_counter() - started:.0f} s")
    return lines
