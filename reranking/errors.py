"""Exceptions raised by the rerank stage.

RerankError
├── RerankUnavailableError   the model is not loaded or the rerank server cannot be reached (503)
├── RerankOverloadedError    the bounded queue is full (429)
└── RerankInputError         a request the stage cannot score (empty query, too many documents) (400/413)
"""


class RerankError(Exception):
    """Base class of every error raised by ``reranking``."""


class RerankUnavailableError(RerankError):
    """The reranker cannot serve right now (model not loaded, remote server down or too slow)."""


class RerankOverloadedError(RerankError):
    """The rerank queue is full; the caller should retry later."""


class RerankInputError(RerankError):
    """The request cannot be scored as given."""
