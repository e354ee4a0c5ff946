"""The Qwen3 model families' default instructions and the Qwen3-Embedding query template: their one home.

The stages' settings (``RETRIEVAL_QUERY_INSTRUCTION``, ``RERANK_INSTRUCTION``) default to these, and so
do the backends. The Qwen3-Reranker's prompt template itself lives in its backend
(``reranking/backends/qwen3.py``).
"""

from __future__ import annotations

# Qwen3-Embedding's default task for queries (documents get no instruction), from its model card.
QWEN3_EMBEDDING_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
# Qwen3-Reranker's default ``<Instruct>``, from its model card.
QWEN3_RERANKER_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"


def format_query(query: str, instruction: str) -> str:
    """Qwen3-Embedding's query template ``Instruct: {instruction}\\nQuery:{query}`` (no space after
    ``Query:``)."""
    return f"Instruct: {instruction}\nQuery:{query}"
