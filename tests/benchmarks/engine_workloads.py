"""What ``bench_engine`` measures, shared with ``bench_kernels`` and the per-size rows (``engine_sizes``):
the traffic (pair and chunk lengths, the reranker's template layout), latency and saturation loops, the
bf16 matmul rate of the run, and the FLOPs of a Qwen3 config. See ``bench_engine`` for the workloads."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import torch
import transformers

from engine.engine import Engine
from engine.runner import PackedQwen3

NO, YES = 2152, 9693
TEMPLATE_TOKENS = 81  # prefix + suffix + default instruction + a short query, Qwen vocabulary
TEMPLATE_HEAD, TEMPLATE_SUFFIX = 72, 9  # shared by one query's pairs / after each document


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

    def pairs(self, lengths, vocab: int) -> list[list[int]]:
        """One query's pairs: a shared head, each document, the fixed suffix (``lengths`` in all)."""
        head = self.seqs([TEMPLATE_HEAD], vocab)[0]
        suffix = list(range(151644, 151644 + TEMPLATE_SUFFIX)) if vocab > 151653 else [1] * TEMPLATE_SUFFIX
        docs = self.seqs([int(n) - TEMPLATE_HEAD - TEMPLATE_SUFFIX for n in lengths], vocab)
        return [head + doc + suffix for doc in docs]


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
    """Tokens/s with ``clients`` threads each submitting their share of requests back to back, after one
    untimed batch of the first two requests (as ``sequential`` warms the reference up: cuDNN builds a plan
    for each new dense shape, ~1 s, once)."""
    engine.run(requests[0] + requests[1])
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


def model_flops(lengths, cfg: dict, last_rows_only: bool = False) -> float:
    """Matmul FLOPs of the layers (2 x non-embedding parameters per token) + causal attention FLOPs.
    ``last_rows_only``: what the engine computes, whose last layer runs q/k/v for every row but attention,
    o_proj and the MLP for each sequence's last row only (the row read out)."""
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
    qkv, rest = h * (nh + 2 * nk) * d, nh * d * h + 3 * h * i
    lengths = np.asarray(lengths, dtype=np.float64)
    tokens, causal = lengths.sum(), (lengths * (lengths + 1)).sum()
    if not last_rows_only:
        return float(2 * L * (qkv + rest) * tokens + L * 2 * nh * d * causal)
    full = 2 * (L - 1) * (qkv + rest) * tokens + (L - 1) * 2 * nh * d * causal
    last = 2 * qkv * tokens + 2 * rest * len(lengths) + 4 * nh * d * lengths.sum()
    return float(full + last)


def as_engine_runs(runner: PackedQwen3, seqs: list[list[int]], share: bool = True) -> tuple[list, object]:
    """The batch as the engine hands it to the runner: the common head once, then each pair's rest."""
    from engine.engine import common_prefix

    ids = np.concatenate([np.asarray(x, dtype=np.int64) for x in seqs])
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in seqs])])
    p = common_prefix(ids, offsets) if share and runner.shares_prefix else 0
    if not p:
        return seqs, None
    return [seqs[0][:p]] + [x[p:] for x in seqs], np.array([-1] + [0] * len(seqs))


def random_qwen3(cfg: dict, device: str) -> transformers.Qwen3ForCausalLM:
    """A Qwen3 causal LM of ``cfg``'s shape, random weights (seed 0), bf16, on ``device``."""
    torch.manual_seed(0)
    with torch.device(device):
        return transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**cfg)).to(torch.bfloat16).eval()


def rerank_engine(causal: transformers.Qwen3ForCausalLM, device: str, budget: int, **options) -> Engine:
    """The rerank engine on ``causal``: P(yes) from the two LM-head rows ("no", "yes"), bf16."""
    return Engine(
        causal,
        head="score",
        head_token_ids=(NO, YES),
        device=device,
        token_budget=budget,
        dtype=torch.bfloat16,
        **options,
    )
