"""Exceptions raised by the retrieval stage.

RetrievalError
├── StoreUnavailableError    the vector store cannot be reached or refused the operation (503)
├── EmbedderMismatchError    the index was built by another embedder than the configured one (503 / startup)
├── InvalidFilterError       a search filter that cannot be expressed safely (400)
├── UnsupportedSearchError   a search mode the store or collection cannot run, e.g. bm25 on Milvus 2.3 (400)
├── ModelLoadError           an embedding model cannot be loaded from the configured path or hub id (503)
├── EmbedderInputError       text the embedder cannot take as given (400)
├── EmbedderOverloadedError  the embedder's bounded queue (the GPU inference engine's) is full (429)
└── EmbedderUnavailableError a loaded embedder cannot serve right now (closed, failed, timed out) (503)
"""


class RetrievalError(Exception):
    """Base class of every error raised by ``retrieval``."""


class StoreUnavailableError(RetrievalError):
    """The vector store is down, unreachable or failed an operation."""


class EmbedderMismatchError(RetrievalError):
    """The collection was built with a different embedder (name or dimension)."""


class InvalidFilterError(RetrievalError):
    """A metadata filter was malformed (bad key, unsupported value type)."""


class UnsupportedSearchError(RetrievalError):
    """A search mode (``bm25``, ``hybrid``) the server or this collection cannot run; the message says why."""


class ModelLoadError(RetrievalError):
    """A model could not be loaded; the message names the setting to change."""


class EmbedderInputError(RetrievalError):
    """The embedder cannot take the input as given."""


class EmbedderOverloadedError(RetrievalError):
    """The embedder's queue is full; the caller should retry later."""


class EmbedderUnavailableError(RetrievalError):
    """The embedder cannot serve right now (its engine was closed, failed or did not answer in time)."""
