"""Exceptions raised by the rerank stage.

RerankError
├── RerankUnavailableError   the model is not loaded or the rerank server cannot be reached (503)
│   └── RerankNotConfiguredError  no reranker is configured at all (503, permanent: no Retry-After)
├── RerankOverloadedError    the bounded queue is full (429)
└── RerankInputError         a request the stage cannot score (empty query, too many documents) (400/413)
"""


class RerankError(Exception):
    """Base class of every error raised by ``reranking``."""


class RerankUnavailableError(RerankError):
    """The reranker cannot serve right now (model not loaded, remote server down or too slow)."""


class RerankNotConfiguredError(RerankUnavailableError):
    """No reranker is configured (``RERANK_BACKEND=none``): permanent until the operator configures one, so
    the answer carries no ``Retry-After`` (``retry_after_s`` None)."""

    retry_after_s = None


class RerankOverloadedError(RerankError):
    """The rerank queue is full; the caller should retry later."""


class RerankInputError(RerankError):
    """The request cannot be scored as given."""
