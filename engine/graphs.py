"""Packing sequences into one batch, and CUDA graphs of the whole forward for (tokens, sequences) buckets.

A graph replays the forward for a fixed number of packed rows and sequence slots: a batch is padded to the
smallest bucket that holds it (``graph_inputs``); every input lives in two device buffers that a replay
overwrites (``ids | positions | last`` int64, ``offsets | attention work items`` int32), copied from pinned
host memory. All graphs share one memory pool: batches run one at a time on one stream.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch


def pack(seqs: Sequence[Sequence[int] | np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Token ids, positions, cumulative offsets (int32) and the longest length of packed sequences."""
    lens = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    cu = np.zeros(len(seqs) + 1, dtype=np.int32)
    np.cumsum(lens, out=cu[1:])
    ids = np.concatenate([np.asarray(s, dtype=np.int64) for s in seqs])
    positions = np.arange(int(cu[-1]), dtype=np.int64) - np.repeat(cu[:-1].astype(np.int64), lens)
    return ids, positions, cu, int(lens.max())


def graph_inputs(ids: np.ndarray, cu: np.ndarray, tokens: int, slots: int) -> tuple[np.ndarray, np.ndarray]:
    """A packed batch padded to a graph's shape: ``ids | positions | last`` (int64) and offsets (int32).

    Unused slots get one padding row each and the last slot the remaining padding rows, so no sequence is
    empty and every row belongs to one; padding never reaches a real row (attention stays within a sequence,
    everything else is row-wise)."""
    n, b = len(ids), len(cu) - 1
    full_cu = np.empty(slots + 1, dtype=np.int32)
    full_cu[: b + 1] = cu
    full_cu[b + 1 : slots] = n + np.arange(1, slots - b, dtype=np.int32)
    full_cu[slots] = tokens
    if full_cu[slots] <= full_cu[slots - 1]:
        raise ValueError(f"{n} tokens in {b} sequences do not fit a graph of {tokens} tokens, {slots} slots")
    lens = np.diff(full_cu).astype(np.int64)
    ints = np.zeros(2 * tokens + slots, dtype=np.int64)
    ints[:n] = ids
    ints[tokens : 2 * tokens] = np.arange(tokens, dtype=np.int64) - np.repeat(
        full_cu[:-1].astype(np.int64), lens
    )
    ints[2 * tokens : 2 * tokens + b] = cu[1:].astype(np.int64) - 1
    return ints, full_cu


class Graph:
    """A CUDA graph of the whole forward for ``tokens`` packed rows in ``slots`` sequences, and its inputs:
    ``ints`` (ids | positions | last, int64) and ``small`` (offsets | attention work items, int32)."""

    def __init__(self, tokens: int, slots: int, capacity: int, device: torch.device) -> None:
        self.tokens, self.slots = tokens, slots
        self.ints = torch.zeros(2 * tokens + slots, dtype=torch.int64, device=device)
        self.small = torch.full((slots + 1 + capacity,), -1, dtype=torch.int32, device=device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.out: torch.Tensor | None = None

    def views(self) -> tuple[torch.Tensor, ...]:
        t, s = self.tokens, self.slots
        return (
            self.ints[:t],
            self.ints[t : 2 * t],
            self.ints[2 * t :],
            self.small[: s + 1],
            self.small[s + 1 :],
        )


SMALL_TOKENS, MANY_SEQUENCES = 4096, 16
Forward = Callable[..., torch.Tensor]  # (ids, positions, cu, last, max_len, items) -> outputs
Items = Callable[[np.ndarray, int], torch.Tensor]  # (offsets, capacity) -> attention work items


class Graphs:
    """The captured graphs of one runner, by (tokens, sequences) bucket."""

    def __init__(self, tokens: Sequence[int], sequences: Sequence[int]) -> None:
        self.tokens, self.sequences = sorted(tokens), sorted(sequences)
        self._graphs: dict[tuple[int, int], Graph] = {}
        self._pool: Any = None

    def __len__(self) -> int:
        return len(self._graphs)

    def find(self, tokens: int, seqs: int) -> Graph | None:
        """The smallest captured bucket for ``seqs`` sequences of ``tokens`` rows in all, if any."""
        if not self._graphs:
            return None
        for s in self.sequences:
            if s < seqs:
                continue
            for t in self.tokens:
                # room for one padding row per unused slot plus the padding sequence itself
                if t >= tokens + (s - seqs) + 1 and (t, s) in self._graphs:
                    return self._graphs[(t, s)]
            return None
        return None

    def replay(self, g: Graph, ids: np.ndarray, cu: np.ndarray, items: Items | None) -> torch.Tensor:
        ints, full_cu = graph_inputs(ids, cu, g.tokens, g.slots)
        small = torch.from_numpy(full_cu)
        capacity = g.small.shape[0] - g.slots - 1
        if capacity and items is not None:
            small = torch.cat([small, items(full_cu, capacity)])
        g.ints.copy_(torch.from_numpy(ints).pin_memory(), non_blocking=True)
        g.small.copy_(small.pin_memory(), non_blocking=True)
        assert g.graph is not None and g.out is not None
        g.graph.replay()
        return g.out

    def capture_all(self, forward: Forward, items: Items | None, capacity: Callable[[int, int], int],
                    device: torch.device) -> None:  # fmt: skip
        for t in self.tokens:
            for s in self.sequences:
                # above SMALL_TOKENS, only batches of many sequences: a few long ones run eagerly
                if t >= s + 1 and (t <= SMALL_TOKENS or s >= MANY_SEQUENCES):
                    self.capture(t, s, forward, items, capacity(t, s + 1), device)

    def capture(self, tokens: int, seqs: int, forward: Forward, items: Items | None, capacity: int,
                device: torch.device) -> None:  # fmt: skip
        slots = seqs + 1
        g = Graph(tokens, slots, capacity if items is not None else 0, device)
        ints, full_cu = graph_inputs(np.zeros(0, dtype=np.int64), np.zeros(1, dtype=np.int32), tokens, slots)
        g.ints.copy_(torch.from_numpy(ints))
        g.small[: slots + 1].copy_(torch.from_numpy(full_cu))
        if items is not None and capacity:
            g.small[slots + 1 :].copy_(items(full_cu, capacity))
        ids, positions, last, cu, work = g.views()
        work_arg = work if work.numel() else None
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                forward(ids, positions, cu, last, tokens, work_arg)
        torch.cuda.current_stream().wait_stream(stream)
        g.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g.graph, pool=self._pool, capture_error_mode="thread_local"):
            g.out = forward(ids, positions, cu, last, tokens, work_arg)[:seqs]
        self._pool = g.graph.pool()
        self._graphs[(tokens, seqs)] = g
