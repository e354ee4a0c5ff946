"""Stage 2: reorder candidate passages for a query. Strings in, ``(index, score)`` out.

``reranking`` imports no other stage (only ``engine``), so that it can run as its own GPU service. Backends
and ``make_reranker`` (a name → factory table) live in ``reranking.backends``.
"""

from reranking.backends import make_reranker
from reranking.errors import (
    RerankError,
    RerankNotConfiguredError,
    RerankOverloadedError,
    RerankUnavailableError,
)
from reranking.reranker import NoneReranker, RankedHit, Reranker, Window
from reranking.settings import RerankSettings

__all__ = [
    "NoneReranker",
    "RankedHit",
    "RerankError",
    "RerankOverloadedError",
    "RerankSettings",
    "RerankNotConfiguredError",
    "RerankUnavailableError",
    "Reranker",
    "Window",
    "make_reranker",
]
