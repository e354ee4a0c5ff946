"""Request and response models of the compatible endpoints, and the pure helpers they share.

- Rerank, Cohere / Jina shape (``/v1/rerank``, ``/v2/rerank``, ``/rerank``): Cohere's response models
  (``id``, ``results: [{index, relevance_score, document?: {text}}]``, ``meta``) plus Jina's ``model`` and
  ``usage.total_tokens``. ``instruction`` is Sieve's extension for Qwen3 rerankers; so are
  ``long_documents`` ("truncate" or "windows", default ``RERANK_LONG_DOCUMENTS``) and, with "windows", each
  result's ``window`` (``{index, count, start, end}``: the window that won, character offsets into the
  document as sent).
- Rerank, TEI shape (``/rerank`` with ``texts``): ``[{index, score, text?}]``.
- Embeddings, OpenAI shape (``/v1/embeddings``); ``base64`` is little-endian float32, as OpenAI sends it.
- Similarity, TEI / Hugging Face shape (``/v1/similarity``): ``{inputs: {source_sentence, sentences}}`` →
  cosine scores.

Token counts on the rerank routes are word pieces (runs of letters or digits, each CJK character, each other
symbol): the reranker's tokenizer lives with the model, possibly in another process, and usually makes a few
more tokens than this. The model still applies its own budget (RERANK_MAX_TOKENS). The embedding routes count
with the embedder's own tokenizer.
"""

from __future__ import annotations

import base64
import math
import re
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, Discriminator, Field, Tag, field_validator, model_validator

from api.limits import LimitExceededError

PIECE = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]|[^\W_]+|[^\w\s]|_+")

Text = Annotated[str, Field(min_length=1)]
LongDocuments = Literal["truncate", "windows"]


def not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must contain non-whitespace text")
    return value


# -- rerank: Cohere / Jina -----------------------------------------------------------------------------------
class TextDocument(BaseModel):
    text: str


class RerankRequest(BaseModel):
    model: str | None = Field(None, description="Accepted for compatibility; the served model answers.")
    query: str = Field(min_length=1)
    documents: list[str | TextDocument] = Field(min_length=1, description="Strings or {text} objects.")
    top_n: int | None = Field(None, ge=1, description="Return only the best n (default: all).")
    return_documents: bool = Field(False, description="Include each document's text in its result.")
    max_tokens_per_doc: int | None = Field(
        None, ge=1, description="Cut documents to this many tokens (default and cap: API_MAX_TOKENS_PER_DOC)."
    )
    truncate: bool = Field(True, description="False: a document over the token limit is refused with 413.")
    instruction: str | None = Field(None, max_length=2000, description="Task instruction (Qwen3 rerankers).")
    long_documents: LongDocuments | None = Field(
        None,
        description=(
            "truncate: cut each document at max_tokens_per_doc. windows: cut nothing; a document longer than "
            "the model's budget is scored by its best overlapping window, and each result says which window "
            "won. Default: RERANK_LONG_DOCUMENTS (truncate), or truncate when max_tokens_per_doc is sent."
        ),
    )

    @field_validator("query")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        return not_blank(value)

    @model_validator(mode="after")
    def _one_way(self) -> RerankRequest:
        if self.long_documents == "windows" and self.max_tokens_per_doc is not None:
            raise ValueError("long_documents=windows cuts nothing: leave out max_tokens_per_doc")
        return self

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]

    def long_documents_or(self, default: LongDocuments) -> LongDocuments:
        """The way asked for: ``long_documents``, else truncate when ``max_tokens_per_doc`` asks for a cut,
        else ``default`` (``RERANK_LONG_DOCUMENTS``)."""
        if self.long_documents is not None:
            return self.long_documents
        return "truncate" if self.max_tokens_per_doc is not None else default


class RerankDocument(BaseModel):
    text: str


class RerankWindow(BaseModel):
    """The window that gave a document its score (``long_documents=windows``): window ``index`` of ``count``
    (count 1: the document fit whole), characters ``start:end`` of the document as sent."""

    index: int
    count: int
    start: int
    end: int


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: RerankDocument | None = None
    window: RerankWindow | None = None


class RerankUsage(BaseModel):
    total_tokens: int


class ApiVersion(BaseModel):
    version: str = "2"


class MetaTokens(BaseModel):
    input_tokens: float


class RerankMeta(BaseModel):
    api_version: ApiVersion = Field(default_factory=ApiVersion)
    tokens: MetaTokens


class RerankResponse(BaseModel):
    id: str
    model: str
    results: list[RerankResult]
    usage: RerankUsage
    meta: RerankMeta


# -- rerank: TEI ---------------------------------------------------------------------------------------------
class TeiRerankRequest(BaseModel):
    query: str = Field(min_length=1)
    texts: list[str] = Field(min_length=1)
    truncate: bool = True
    truncation_direction: Literal["Right", "Left", "right", "left"] = "Right"
    raw_scores: bool = Field(False, description="Logits instead of probabilities.")
    return_text: bool = False

    @field_validator("query")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        return not_blank(value)


class TeiRank(BaseModel):
    index: int
    score: float
    text: str | None = None


def _shape(value: Any) -> str:
    if isinstance(value, TeiRerankRequest) or (isinstance(value, dict) and "texts" in value):
        return "tei"
    return "cohere"


AnyRerankRequest = Annotated[
    Annotated[RerankRequest, Tag("cohere")] | Annotated[TeiRerankRequest, Tag("tei")],
    Discriminator(_shape),
]


# -- embeddings and similarity -------------------------------------------------------------------------------
class EmbeddingsRequest(BaseModel):
    input: Text | Annotated[list[Text], Field(min_length=1)] = Field(
        description="A string or a list of strings (token arrays: not taken)."
    )
    model: str | None = Field(None, description="Accepted for compatibility; the served model answers.")
    dimensions: int | None = Field(None, ge=1, description="Keep the first n dimensions, renormalised.")
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None
    truncate: bool = Field(True, description="False: an input over the model's token limit is refused (413).")
    input_type: Literal["document", "query"] = Field(
        "document", description="query: embed as a search query (Qwen3 adds the instruction)."
    )
    instruction: str | None = Field(None, max_length=2000, description="Query instruction (Qwen3).")

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


class SimilarityInput(BaseModel):
    source_sentence: Text
    sentences: list[Text] = Field(min_length=1)


class SimilarityRequest(BaseModel):
    inputs: SimilarityInput
    truncate: bool = True


# -- helpers -------------------------------------------------------------------------------------------------
# ASCII text, counted by byte translations (a tenth of the regex's time): alphanumeric runs are the words
# left when every other byte is a space; each byte that is neither a word character nor a space is a piece
# of its own; each run of underscores is one more.
_BREAK_WORDS = bytes(c if chr(c).isalnum() and c < 128 else 32 for c in range(256))
_SYMBOLS = bytes(c for c in range(128) if not (chr(c).isalnum() or chr(c) == "_" or chr(c).isspace()))
_KEEP_UNDERSCORES = bytes(c if c == ord("_") else 32 for c in range(256))


def count_pieces(text: str) -> int:
    """How many ``PIECE`` matches ``text`` holds: the word pieces of the rerank routes' caps and usage."""
    if not text.isascii():
        return sum(1 for _ in PIECE.finditer(text))
    raw = text.encode("ascii")
    words = len(raw.translate(_BREAK_WORDS).split())
    symbols = len(raw) - len(raw.translate(None, _SYMBOLS))
    underscores = len(raw.translate(_KEEP_UNDERSCORES).split()) if b"_" in raw else 0
    return words + symbols + underscores


def cut_pieces(text: str, limit: int, *, from_left: bool = False) -> str:
    """``text`` cut to its first (or, ``from_left``, its last) ``limit`` pieces, original characters kept."""
    spans = [m.span() for m in PIECE.finditer(text)]
    if len(spans) <= limit:
        return text
    if from_left:
        return text[spans[len(spans) - limit][0] :] if limit else ""
    return text[: spans[limit - 1][1]] if limit else ""


def fit_documents(
    query: str, texts: list[str], limit: int | None, *, truncate: bool, from_left: bool = False
) -> tuple[list[str], int]:
    """Documents cut to ``limit`` pieces (None: no limit; ``LimitExceededError`` without ``truncate``) and
    the tokens the request uses: the query once per document plus each document."""
    out: list[str] = []
    total = 0
    query_tokens = count_pieces(query)
    for i, text in enumerate(texts):
        n = count_pieces(text)
        if limit is not None and n > limit:
            if not truncate:
                raise LimitExceededError(
                    f"document {i} has {n} tokens; the limit is {limit} tokens per document "
                    "(max_tokens_per_doc, API_MAX_TOKENS_PER_DOC); send truncate=true to cut it"
                )
            text, n = cut_pieces(text, limit, from_left=from_left), limit
        out.append(text)
        total += query_tokens + n
    return out, total


def logit(probability: float) -> float:
    """The raw score behind a probability from a sigmoid (cross-encoders, Qwen3's yes-vs-no)."""
    p = min(max(probability, 1e-7), 1 - 1e-7)
    return math.log(p / (1 - p))


def encode(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return [float(x) for x in np.asarray(vector, dtype=np.float32)]


def shorten(vectors: np.ndarray, dimensions: int | None) -> np.ndarray:
    """The first ``dimensions`` of each vector, renormalised (Matryoshka-style); all of them for None."""
    if dimensions is None or dimensions >= vectors.shape[1]:
        return vectors
    cut = vectors[:, :dimensions]
    return cut / np.maximum(np.linalg.norm(cut, axis=1, keepdims=True), 1e-12)
