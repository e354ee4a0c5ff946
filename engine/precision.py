"""The number format of the engine's products, and the accuracy gate that decides whether FP8 may serve.

``bf16`` (the default) runs every product in bf16. ``fp8`` asks for e4m3 products (``engine.fp8``) where
the hardware has them; warm-up then scores its own probe batch both ways and keeps FP8 only if it agrees
with bf16 (``Gate``): for the score head, the mean Kendall tau of each probe query's ranking >= 0.98 and
the largest |P(yes) difference| <= 0.03; for the embedding head, the cosine of every probe vector to its
bf16 twin >= 0.999. Otherwise the engine runs bf16 and says why (``PrecisionChoice.reason``: the log,
``Engine.precision_reason``, and ``/info`` through the stages' backends).

No torch here: the gate's arithmetic is numpy, so settings and the API can name precisions without it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PRECISIONS = ("bf16", "fp8")


def check_precision(name: str) -> str:
    """``name`` normalised (``"FP8"`` -> ``"fp8"``); ValueError for anything but bf16 or fp8."""
    value = name.strip().lower()
    if value not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
    return value


@dataclass(frozen=True)
class Gate:
    """The thresholds FP8 must meet against bf16 on the warm-up probe batch."""

    min_mean_tau: float = 0.98  # score head: mean over the probe's queries of Kendall's tau-b
    max_dp: float = 0.03  # score head: max |P(yes) fp8 - P(yes) bf16| over every probe pair
    min_cosine: float = 0.999  # embedding head: the smallest cosine of a probe vector to its bf16 twin


@dataclass(frozen=True)
class GateResult:
    """What the gate measured; ``passed`` says whether FP8 met ``gate``."""

    head: str
    passed: bool
    measured: dict[str, float]  # tau_mean / tau_min / max_dp, or cosine_min / cosine_mean
    probe: str  # what was scored, e.g. "8 queries x 50 documents, 109,000 tokens"

    def summary(self) -> str:
        figures = ", ".join(f"{k} {v:.4g}" for k, v in self.measured.items())
        return f"{'passed' if self.passed else 'failed'} on {self.probe}: {figures}"


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision in use, the one asked for, and why they differ (or how FP8 passed its gate)."""

    asked: str
    used: str
    reason: str
    gate: GateResult | None = None


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-b of two score vectors (ties counted as neither concordant nor discordant; 1.0 when
    either is constant: no order to disagree with)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError("kendall_tau takes two vectors of one length")
    i, j = np.triu_indices(len(a), k=1)
    da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
    pairs_a, pairs_b = float(np.count_nonzero(da)), float(np.count_nonzero(db))
    if pairs_a == 0 or pairs_b == 0:
        return 1.0
    return float((da * db).sum() / np.sqrt(pairs_a * pairs_b))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def score_gate(
    reference: list[np.ndarray], candidate: list[np.ndarray], gate: Gate, probe: str = ""
) -> GateResult:
    """The score head's gate: per query the margins (logit_yes - logit_no) of bf16 and of FP8."""
    if len(reference) != len(candidate) or not reference:
        raise ValueError("score_gate needs the same, non-empty list of queries from both precisions")
    taus = np.array([kendall_tau(r, c) for r, c in zip(reference, candidate, strict=True)])
    dp = max(float(np.abs(sigmoid(r) - sigmoid(c)).max()) for r, c in zip(reference, candidate, strict=True))
    measured = {"tau_mean": float(taus.mean()), "tau_min": float(taus.min()), "max_dp": dp}
    passed = bool(taus.mean() >= gate.min_mean_tau and dp <= gate.max_dp)
    return GateResult("score", passed, measured, probe)


def embedding_gate(reference: np.ndarray, candidate: np.ndarray, gate: Gate, probe: str = "") -> GateResult:
    """The embedding head's gate: unit vectors (n, hidden) of bf16 and of FP8, row by row."""
    reference, candidate = np.asarray(reference, np.float64), np.asarray(candidate, np.float64)
    if reference.shape != candidate.shape or reference.ndim != 2 or not len(reference):
        raise ValueError("embedding_gate needs two (n, hidden) arrays of one shape")
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(candidate, axis=1)
    cos = (reference * candidate).sum(1) / np.maximum(norms, 1e-12)
    measured = {"cosine_min": float(cos.min()), "cosine_mean": float(cos.mean())}
    return GateResult("embedding", bool(cos.min() >= gate.min_cosine), measured, probe)
