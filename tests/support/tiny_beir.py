"""A tiny BEIR-layout folder (6 documents, 4 queries) whose BM25 ranking is known by construction."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

DOCS = {
    "d1": ("Photosynthesis", "Chlorophyll absorbs light and photosynthesis turns it into sugar."),
    "d2": ("Leaves", "Chlorophyll pigments make leaves look green."),
    "d3": ("Volcanoes", "A volcano near the volcano field: volcano eruption and ash."),
    "d4": ("Magma", "An eruption brings magma up to build new crust."),
    "d5": ("Bread", "Sourdough rises through fermentation by wild yeast."),
    "d6": ("Geology", "Tectonic plates drift slowly over the mantle."),
}
QUERIES = {
    "q1": "photosynthesis chlorophyll",
    "q2": "volcano eruption",
    "q3": "sourdough fermentation",
    "q4": "plates mantle",
    "q5": "a query nobody judged",
}
QRELS = [("q1", "d1", 2), ("q1", "d2", 1), ("q2", "d4", 1), ("q2", "d3", 0), ("q3", "d5", 1), ("q4", "d6", 1)]


def write_tiny_beir(folder: Path, *, gzipped: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    corpus = "".join(json.dumps({"_id": k, "title": t, "text": x}) + "\n" for k, (t, x) in DOCS.items())
    if gzipped:
        with gzip.open(folder / "corpus.jsonl.gz", "wt", encoding="utf-8") as fh:
            fh.write(corpus)
    else:
        (folder / "corpus.jsonl").write_text(corpus, encoding="utf-8")
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in QUERIES.items()), encoding="utf-8"
    )
    (folder / "qrels").mkdir(exist_ok=True)
    lines = ["query-id\tcorpus-id\tscore", *(f"{q}\t{d}\t{g}" for q, d, g in QRELS)]
    (folder / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def write_keyword_beir(folder: Path, *, queries: int = 60) -> Path:
    """A BEIR folder where BM25 finds every query's one relevant document first (it alone holds all the
    query's words, one of them its own) and a distractor shares the query's first word three times."""
    words = [f"w{i}" for i in range(12)]
    docs, lines, qrels = [], [], []
    for i in range(queries):
        a, b = words[i % 12], words[(i * 5 + 1) % 12]
        docs += [{"_id": f"r{i}", "title": "", "text": f"{a} {b} topic{i}"}]
        docs += [{"_id": f"x{i}", "title": "", "text": f"{a} {a} {a} filler{i}"}]
        lines.append({"_id": f"q{i}", "text": f"{a} {b} topic{i}"})
        qrels.append(f"q{i}\tr{i}\t1")
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in lines), encoding="utf-8")
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "\n".join(qrels) + "\n", encoding="utf-8"
    )
    return folder
