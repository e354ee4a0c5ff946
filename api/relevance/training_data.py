"""Labelled data and output folders for ``sieve train``: loading, the held-out split, mining, versions.

Sources (``load_labelled``):

    a folder                 BEIR layout; only ``api.relevance.beir``'s ``train`` split
                             (sha256(query id) % 5 != 0), so the queries of ``sieve eval --split eval``
                             are never trained on
    a .jsonl[.gz] file       one JSON object a line, either a review export (a ``ReviewItem``; only labelled
                             items count, through ``api.review.training_pairs``) or ``{"query", "passage",
                             "label"}`` (label > 0: the passage answers the query; 0: it does not)

Every source becomes one ``LabelledData``: queries, a passage pool and graded judgements (0 = a labelled
negative, which training uses as a hard negative). The held-out split is by query (``split_by_query``):
sha256(seed, query id) orders the queries, so a query is on one side only, on every machine.

Output (``new_version_dir``): ``<out>/<kind>-v<N>`` with the next free N. The manifest ``sieve-model.json`` is
written last, so a folder without one is an unfinished run that ``--resume`` continues. The revision is sha256
over the saved weight files (``weights_revision``), first 12 hex digits.

Errors: ``ValueError`` (``TrainingDataError``) naming the file and what to change.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from api.relevance.beir import load_beir
from api.review import ReviewItem, training_pairs

MANIFEST = "sieve-model.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_VERSION = re.compile(r"^(?P<kind>[a-z0-9-]+)-v(?P<n>\d+)$")


class TrainingDataError(ValueError):
    """The labelled data cannot be used; the message says why and what to change."""


@dataclass
class LabelledData:
    source: str
    digest: str  # sha256 of the source file(s), first 16 hex digits
    queries: dict[str, str]  # query id -> text
    passages: dict[str, str]  # passage id -> text
    qrels: dict[str, dict[str, int]]  # query id -> passage id -> grade (0: a labelled negative)
    notes: list[str] = field(default_factory=list)

    def positives(self, qid: str) -> list[str]:
        return [pid for pid, grade in self.qrels.get(qid, {}).items() if grade > 0]

    def negatives(self, qid: str) -> list[str]:
        return [pid for pid, grade in self.qrels.get(qid, {}).items() if grade <= 0]

    def subset(self, qids: Sequence[str]) -> LabelledData:
        """The same passage pool, with only these queries."""
        return LabelledData(
            self.source,
            self.digest,
            {q: self.queries[q] for q in qids},
            self.passages,
            {q: self.qrels[q] for q in qids},
        )


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _file_digest(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode())
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def _open_text(path: Path) -> IO[str]:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _label(value: Any, where: str) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return max(0, int(value))
    raise TrainingDataError(f"{where}: label must be a number or true/false, got {value!r}")


def _jsonl_pairs(path: Path) -> Iterator[tuple[str, str, int]]:
    with _open_text(path) as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path} line {number}"
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise TrainingDataError(f"{where}: not JSON ({exc})") from exc
            if isinstance(row, dict) and "candidates" in row:
                try:
                    item = ReviewItem.model_validate(row)
                except ValueError as exc:
                    raise TrainingDataError(f"{where}: not a review export item ({exc})") from exc
                for pair in training_pairs(item):
                    yield pair["query"], pair["passage"], int(pair["label"])
            elif isinstance(row, dict) and {"query", "passage", "label"} <= row.keys():
                yield str(row["query"]), str(row["passage"]), _label(row["label"], where)
            else:
                raise TrainingDataError(
                    f"{where}: unknown format; expected a review export item (sieve review export) or "
                    '{"query": ..., "passage": ..., "label": 0 or 1}'
                )


def load_jsonl(path: Path, *, max_queries: int | None = None) -> LabelledData:
    queries: dict[str, str] = {}
    passages: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for query, passage, label in _jsonl_pairs(path):
        if not query.strip() or not passage.strip():
            continue
        qid = _short_hash(query)
        if qid not in queries and max_queries is not None and len(queries) >= max_queries:
            continue
        pid = _short_hash(passage)
        queries[qid] = query
        passages[pid] = passage
        grades = qrels.setdefault(qid, {})
        grades[pid] = max(grades.get(pid, 0), label)
    return LabelledData(str(path), _file_digest([path]), queries, passages, qrels)


def load_beir_train(
    folder: Path, *, qrels: str | None = None, max_queries: int | None = None, corpus_limit: int | None = None
) -> LabelledData:
    data = load_beir(folder, qrels=qrels, split="train", max_queries=max_queries, corpus_limit=corpus_limit)
    files = [p for p in folder.iterdir() if p.name.startswith(("corpus.", "queries."))]
    files.append(folder / "qrels" / f"{data.qrels_name}.tsv")
    passages = {doc_id: data.document_text(doc_id) for doc_id in data.corpus}
    judged = {qid: {d: g for d, g in grades.items() if d in passages} for qid, grades in data.qrels.items()}
    return LabelledData(
        f"{folder} (qrels {data.qrels_name}, split train)",
        _file_digest(files),
        dict(data.queries),
        passages,
        judged,
        notes=[f"BEIR train split: {len(data.queries)} queries; eval-split queries are never trained on"],
    )


def load_labelled(
    path: Path, *, qrels: str | None = None, max_queries: int | None = None, corpus_limit: int | None = None
) -> LabelledData:
    """Load any supported source (see the module docstring) and check that it can train something."""
    path = Path(path)
    if path.is_dir():
        data = load_beir_train(path, qrels=qrels, max_queries=max_queries, corpus_limit=corpus_limit)
    elif path.is_file() and path.name.endswith((".jsonl", ".jsonl.gz")):
        data = load_jsonl(path, max_queries=max_queries)
    elif not path.exists():
        raise TrainingDataError(f"{path} does not exist: pass --data a BEIR folder or a .jsonl file")
    else:
        raise TrainingDataError(
            f"{path}: unknown data format; pass a BEIR folder (corpus, queries, qrels/) or a .jsonl file "
            "of review export items or query/passage/label lines"
        )
    if not data.qrels:
        raise TrainingDataError(f"{path} has no labelled examples (a review export needs labelled items)")
    if not any(data.positives(q) for q in data.qrels):
        raise TrainingDataError(
            f"{path} has labels but no positive one: label at least one passage per query as relevant "
            "(label 1, or a review label naming the passages that answer)"
        )
    return data


def split_by_query(
    data: LabelledData, held_out: float, *, seed: int = 0
) -> tuple[LabelledData, LabelledData]:
    """(train, held out): queries with a positive, ordered by sha256(seed, id); the first part is held out.

    Queries without a positive cannot anchor a training example and are dropped from both sides.
    """
    if not 0.0 <= held_out < 1.0:
        raise TrainingDataError(f"--held-out must be in [0, 1), got {held_out}")
    usable = [q for q in data.queries if data.positives(q)]
    ordered = sorted(usable, key=lambda q: hashlib.sha256(f"{seed}:{q}".encode()).hexdigest())
    count = round(len(ordered) * held_out)
    if held_out > 0 and len(ordered) >= 2:
        count = max(1, min(count, len(ordered) - 1))
    held = set(ordered[:count])
    train = [q for q in data.queries if q in set(usable) - held]
    return data.subset(train), data.subset([q for q in data.queries if q in held])


def mine_negatives(
    scores: np.ndarray,
    pool_ids: Sequence[str],
    positives: Sequence[set[str]],
    count: int,
    *,
    skip: int = 0,
    margin: float = 0.05,
    depth: int = 50,
    seed: int = 0,
    near_ties: np.ndarray | None = None,
) -> list[list[str]]:
    """Hard negatives per query row of ``scores`` (query x pool, higher is better: the base model's
    similarity, or another ranking, ``api.relevance.mining``).

    From the top ``depth`` of each row, after the first ``skip`` ranks, take the best ``count`` that are not
    positives and score below ``(1 - margin)`` x the best positive's score (a near-tie is likely an unlabelled
    positive). ``near_ties`` (same shape; default ``scores``) is the matrix that rule reads: the base model's
    cosine when the ranking is a fusion, whose rank-based scores say nothing about how alike two passages
    are. Rows short of ``count`` are filled with random pool passages (never positives).
    """
    rng = np.random.default_rng(seed)
    index = {pid: i for i, pid in enumerate(pool_ids)}
    ties = scores if near_ties is None else near_ties
    if ties.shape != scores.shape:
        raise ValueError(f"near_ties has shape {ties.shape}, scores {scores.shape}")
    out: list[list[str]] = []
    for row, tie_row, pos in zip(scores, ties, positives, strict=True):
        pos_scores = [tie_row[index[p]] for p in pos if p in index]
        ceiling = (1.0 - margin) * max(pos_scores) if pos_scores else np.inf
        top = np.argsort(-row, kind="stable")[: depth + skip]
        chosen = [pool_ids[i] for i in top[skip:] if pool_ids[i] not in pos and tie_row[i] < ceiling][:count]
        tries = 0
        while len(chosen) < count and tries < 20 * count and len(pool_ids) > len(pos):
            candidate = pool_ids[int(rng.integers(len(pool_ids)))]
            tries += 1
            if candidate not in pos and candidate not in chosen:
                chosen.append(candidate)
        out.append(chosen)
    return out


# -- output folders ------------------------------------------------------------------------------------------
def version_dirs(out: Path, kind: str) -> list[tuple[int, Path]]:
    found = []
    for path in Path(out).glob(f"{kind}-v*"):
        match = _VERSION.match(path.name)
        if path.is_dir() and match and match["kind"] == kind:
            found.append((int(match["n"]), path))
    return sorted(found)


def new_version_dir(out: Path, kind: str) -> Path:
    """Create ``<out>/<kind>-v<N>`` with N one above every existing version (finished or not)."""
    existing = version_dirs(out, kind)
    path = Path(out) / f"{kind}-v{existing[-1][0] + 1 if existing else 1}"
    path.mkdir(parents=True, exist_ok=False)
    return path


def unfinished_dir(out: Path, kind: str) -> Path | None:
    """The newest version folder without a manifest (an interrupted run), or None."""
    for _, path in reversed(version_dirs(out, kind)):
        if not (path / MANIFEST).exists():
            return path
    return None


def weights_revision(folder: Path) -> str:
    """sha256 over the weight files under ``folder`` (not checkpoints), by relative path; 12 hex digits."""
    folder = Path(folder)
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix in WEIGHT_SUFFIXES and "checkpoints" not in p.relative_to(folder).parts
    )
    if not files:
        raise TrainingDataError(f"{folder} holds no weight files ({', '.join(WEIGHT_SUFFIXES)})")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(folder).as_posix().encode())
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:12]


def write_manifest(folder: Path, kind: str, base: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """Write ``sieve-model.json`` (last: it marks the run finished) and return it."""
    match = _VERSION.match(Path(folder).name)
    manifest = {
        "kind": kind,
        "base": base,
        "revision": weights_revision(folder),
        "version": int(match["n"]) if match else None,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **fields,
    }
    (Path(folder) / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest
