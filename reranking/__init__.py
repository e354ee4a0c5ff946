"""Stage 2: reorder candidate passages for a query. Strings in, ``(index, score)`` out.

``reranking`` is a leaf package so that it can run as its own GPU service.
"""

from reranking.errors import RerankError, RerankOverloadedError, RerankUnavailableError
from reranking.reranker import NoneReranker, RankedHit, Reranker, make_reranker
from reranking.settings import RerankSettings

__all__ = [
    "NoneReranker",
    "RankedHit",
    "RerankError",
    "RerankOverloadedError",
    "RerankSettings",
    "RerankUnavailableError",
    "Reranker",
    "make_reranker",
]
