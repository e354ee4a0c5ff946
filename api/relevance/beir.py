"""Read a BEIR-layout folder: ``corpus.jsonl[.gz]``, ``queries.jsonl[.gz]``, ``qrels/<name>.tsv``.

Every line of the corpus is ``{"_id", "title", "text"}``; of the queries ``{"_id", "text"}``; a qrels file has
the header ``query-id corpus-id score`` and one judgement per line (tab-separated, graded relevance >= 0).

Query split (so that a later fine-tune trains on queries the evaluation never sees):

    eval    sha256(query id, UTF-8) as an integer, modulo 5, equals 0   (about a fifth of the queries)
    train   every other query
    all     every query

The rule depends on the query id alone (never on Python's salted ``hash``, never on file order), so it is the
same on every machine and for every qrels file.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

Split = Literal["eval", "train", "all"]
SPLITS: tuple[str, ...] = ("eval", "train", "all")
EVAL_MODULUS = 5


class BeirFormatError(ValueError):
    """The folder is not in the BEIR layout; the message says what is missing or malformed."""


def query_split(query_id: str) -> Literal["eval", "train"]:
    """Which split a query belongs to (see the module docstring)."""
    digest = int(hashlib.sha256(query_id.encode("utf-8")).hexdigest(), 16)
    return "eval" if digest % EVAL_MODULUS == 0 else "train"


@dataclass
class BeirDataset:
    name: str
    corpus: dict[str, tuple[str, str]]  # doc id -> (title, text)
    queries: dict[str, str]  # query id -> text, only judged queries of the chosen split, in file order
    qrels: dict[str, dict[str, int]]  # query id -> doc id -> grade
    qrels_name: str
    split: str
    skipped: dict[str, int] = field(default_factory=dict)

    def document_text(self, doc_id: str) -> str:
        title, text = self.corpus[doc_id]
        return f"{title}\n\n{text}".strip() if title else text.strip()


def _open(folder: Path, stem: str) -> IO[str]:
    for path, opener in ((folder / f"{stem}.jsonl", open), (folder / f"{stem}.jsonl.gz", gzip.open)):
        if path.exists():
            return opener(path, "rt", encoding="utf-8")  # type: ignore[operator] # open and gzip.open alike
    raise BeirFormatError(f"{folder} has no {stem}.jsonl or {stem}.jsonl.gz")


def _jsonl(folder: Path, stem: str) -> Iterator[dict[str, str]]:
    with _open(folder, stem) as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                yield {"_id": str(row["_id"]), "title": str(row.get("title") or ""), "text": str(row["text"])}
            except (ValueError, KeyError, TypeError) as exc:
                raise BeirFormatError(
                    f"{stem} line {number}: expected a JSON object with _id and text"
                ) from exc


def qrels_path(folder: Path, name: str | None) -> Path:
    """``qrels/<name>.tsv``; without a name ``test.tsv`` if present, else the only file there."""
    directory = folder / "qrels"
    files = sorted(directory.glob("*.tsv")) if directory.is_dir() else []
    if name:
        path = directory / f"{name}.tsv"
        if not path.exists():
            raise BeirFormatError(f"no {path} (there: {', '.join(p.stem for p in files) or 'nothing'})")
        return path
    if (directory / "test.tsv").exists():
        return directory / "test.tsv"
    if len(files) == 1:
        return files[0]
    raise BeirFormatError(
        f"{directory}: pass --qrels to pick one of {', '.join(p.stem for p in files) or '(none)'}"
    )


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8", newline="") as fh:
        for number, row in enumerate(csv.reader(fh, delimiter="\t"), start=1):
            if not row or (number == 1 and row[0].strip().lower() in {"query-id", "query_id", "qid"}):
                continue
            if len(row) < 3:
                raise BeirFormatError(f"{path} line {number}: expected query-id, corpus-id, score")
            try:
                grade = int(float(row[2]))
            except ValueError as exc:
                raise BeirFormatError(f"{path} line {number}: score {row[2]!r} is not a number") from exc
            qrels.setdefault(row[0].strip(), {})[row[1].strip()] = grade
    return qrels


def sample_ids(ids: list[str], count: int | None, seed: int | None = 0) -> list[str]:
    """``count`` of ``ids`` drawn at random with ``seed`` (the same on every machine; None: the first
    ``count``), in their own order; all of them when ``count`` is None or not smaller."""
    if count is None or count >= len(ids):
        return list(ids)
    if seed is None:
        return ids[: max(0, count)]
    chosen = set(random.Random(seed).sample(ids, max(0, count)))
    return [item for item in ids if item in chosen]


def load_beir(
    folder: Path,
    *,
    qrels: str | None = None,
    split: str = "all",
    max_queries: int | None = None,
    corpus_limit: int | None = None,
    seed: int | None = None,
) -> BeirDataset:
    """Load the corpus, the judged queries of ``split`` (``max_queries`` of them: drawn at random with
    ``seed``, kept in file order; the first ones where ``seed`` is None) and their qrels.

    ``corpus_limit`` keeps the first N documents plus every document judged for the kept queries (so a quick
    run still has its relevant documents; the judged ones are added on top of N).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    folder = Path(folder)
    if not folder.is_dir():
        raise BeirFormatError(f"{folder} is not a folder")
    path = qrels_path(folder, qrels)
    judged = read_qrels(path)
    queries: dict[str, str] = {}
    skipped = {"unjudged": 0, "other split": 0}
    for row in _jsonl(folder, "queries"):
        qid = row["_id"]
        if not any(grade > 0 for grade in judged.get(qid, {}).values()):
            skipped["unjudged"] += 1
        elif split != "all" and query_split(qid) != split:
            skipped["other split"] += 1
        else:
            queries[qid] = row["text"]
    kept = sample_ids(list(queries), max_queries, seed)
    skipped["not sampled"] = len(queries) - len(kept)
    queries = {qid: queries[qid] for qid in kept}
    needed = {doc for qid in queries for doc in judged[qid]}
    corpus: dict[str, tuple[str, str]] = {}
    for row in _jsonl(folder, "corpus"):
        if corpus_limit is None or len(corpus) < corpus_limit or row["_id"] in needed:
            corpus[row["_id"]] = (row["title"], row["text"])
    if not queries:
        raise BeirFormatError(f"no judged queries in {folder} for qrels {path.stem!r} and split {split!r}")
    return BeirDataset(
        name=folder.name,
        corpus=corpus,
        queries=queries,
        qrels={qid: judged[qid] for qid in queries},
        qrels_name=path.stem,
        split=split,
        skipped=skipped,
    )
