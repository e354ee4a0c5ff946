"""Token ids from a fast tokenizer's Rust backend, called directly: the transformers wrapper takes as long
again converting its output (4 of the 9 ms that 50 rerank bodies of ~350 tokens took on the lent H200's host).
Used by the engine's reranker and embedder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def rust_backend(tokenizer: Any) -> Any | None:
    """``tokenizer``'s Rust backend where it may be called directly: a fast tokenizer whose backend holds no
    truncation or padding (the wrapper leaves those set on its shared backend after a call that asked for
    them); else None (call the wrapper)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or backend.truncation is not None or backend.padding is not None:
        return None
    return backend


def batch_ids(backend: Any, texts: Sequence[str]) -> list[list[int]]:
    """Each text's ids, no special tokens: ``encode_batch_fast`` where the backend has it (tokenizers >= 0.21:
    the same ids without offsets; 7.8 against 9.6 ms for 50 bodies of ~380 tokens on 2 cores here)."""
    encode = getattr(backend, "encode_batch_fast", None) or backend.encode_batch
    return [e.ids for e in encode(list(texts), add_special_tokens=False)]
