"""Embed the texts ``bench_relevance.py --dump-texts`` wrote, as the sentence-transformers backend does
(``retrieval.backends.sentence_transformers``: its encode_document / encode_query, L2-normalised, float32),
on whatever device is at hand; writes ``--out`` (.npz: ``keys`` = ``d:<sha1>`` / ``q:<sha1>``, ``vectors``).
Needs only torch, numpy and sentence-transformers, so it runs on a GPU machine without the rest of Sieve.

    python tests/benchmarks/embed_texts.py --texts texts.jsonl.gz --model MODEL_DIR --out vectors.npz
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--texts", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True, help="a sentence-transformers folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    with gzip.open(args.texts, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    model = SentenceTransformer(str(args.model), device=args.device)
    model.float()  # weights may be stored in half precision to travel; compute as the CPU backend does
    started = time.perf_counter()
    keys, vectors = [], []
    for kind in ("d", "q"):
        texts = [row["text"] for row in rows if row["kind"] == kind]
        if not texts:
            continue
        encode = model.encode_query if kind == "q" else model.encode_document
        with torch.inference_mode():
            found = encode(texts, batch_size=args.batch, normalize_embeddings=True, convert_to_numpy=True)
        keys += [f"{kind}:{hashlib.sha1(t.encode('utf-8')).hexdigest()}" for t in texts]
        vectors.append(np.asarray(found, dtype=np.float32))
    np.savez(args.out, keys=np.array(keys), vectors=np.concatenate(vectors))
    print(f"{len(keys)} texts in {time.perf_counter() - started:.1f} s on {args.device} -> {args.out}")


if __name__ == "__main__":
    main()
