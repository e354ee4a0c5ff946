"""Clusters of flagged searches: recurring gaps rather than single queries.

The review queue holds one item per low-confidence search. ``cluster_items`` embeds the items' queries with
the serving embedder (passed in as a function, so tests use a fake), groups them with scikit-learn's
``AgglomerativeClustering`` on cosine distance with a distance threshold (the number of gaps is not known in
advance), and describes each cluster: its size, its typical queries (the distinct queries closest to the
cluster's centroid), the share already labelled, the mean best score, and when it was first and last seen.
Clusters smaller than ``min_size`` items are pooled into one ``unclustered`` group.

A query text flagged several times is embedded once (texts are compared case- and space-insensitively) and
counts once per item, so a query that keeps failing is a cluster of its own. The result is deterministic:
items are taken oldest first, clusters are ordered by size, then by when they were first seen.

Errors: ``ClusteringUnavailableError`` (a ``ReviewError``) when scikit-learn is not installed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from api.review import ReviewError, ReviewItem, ReviewSink, State

DEFAULT_THRESHOLD = 0.5  # average cosine distance; MiniLM paraphrases sit well below, unrelated queries above
Linkage = Literal["average", "complete", "single"]
StateFilter = Literal["pending", "labelled", "all"]
Embed = Callable[[Sequence[str]], np.ndarray]


class ClusteringUnavailableError(ReviewError):
    """scikit-learn is not installed (the ``train`` extra brings it)."""


class ReviewCluster(BaseModel):
    id: int = Field(description="1 for the largest cluster, 2 for the next...; 0 for the unclustered group.")
    size: int = Field(description="Flagged searches in the cluster.")
    typical: list[str] = Field(description="Up to 5 distinct queries, the closest to the centre first.")
    labelled_share: float = Field(description="Share of the cluster's items that carry a label, in [0, 1].")
    mean_best: float = Field(description="Mean of the items' best scores.")
    first_seen: float = Field(description="When the oldest item was flagged (epoch seconds).")
    last_seen: float = Field(description="When the newest item was flagged (epoch seconds).")
    item_ids: list[str] = Field(description="The items' ids, oldest first.")


class ReviewClusters(BaseModel):
    clusters: list[ReviewCluster] = Field(description="Clusters of at least min_size items, largest first.")
    unclustered: ReviewCluster | None = Field(
        description="The items in no cluster of min_size (most recent queries as typical); null: none."
    )
    items: int = Field(description="Flagged searches clustered.")
    truncated: bool = Field(description="True: older matching items were left out (the limit).")
    threshold: float
    embedder: str = ""


def recent_items(
    review: ReviewSink,
    *,
    tenant: str | None = None,
    state: StateFilter = "all",
    since: float | None = None,
    limit: int = 2000,
    page_size: int = 500,
) -> tuple[list[ReviewItem], bool]:
    """The ``limit`` most recent matching items, oldest first, and whether older ones were left out."""
    wanted: State | None = None if state == "all" else state
    kept: deque[ReviewItem] = deque(maxlen=limit)
    seen = 0
    cursor: str | None = None
    while True:
        page = review.page(tenant=tenant, state=wanted, since=since, cursor=cursor, limit=page_size)
        kept.extend(page.items)
        seen += len(page.items)
        cursor = page.next_cursor
        if cursor is None:
            return list(kept), seen > len(kept)


def _key(query: str) -> str:
    return " ".join(query.split()).casefold()


def cluster_labels(
    vectors: np.ndarray, *, threshold: float = DEFAULT_THRESHOLD, linkage: Linkage = "average"
) -> np.ndarray:
    """A cluster label per row of ``vectors``: rows join while their ``linkage`` cosine distance is below
    ``threshold``. Labels are 0..k-1 in the order of each cluster's first row."""
    n = len(vectors)
    if n < 2:
        return np.zeros(n, dtype=np.int64)
    try:
        from sklearn.cluster import AgglomerativeClustering
        from sklearn.metrics.pairwise import cosine_distances
    except ImportError as exc:
        raise ClusteringUnavailableError(
            "clustering the review queue needs scikit-learn: pip install 'sieve[train]'"
        ) from exc
    x = np.nan_to_num(np.asarray(vectors, dtype=np.float64))
    distances = cosine_distances(x)  # a zero vector is at distance 1 from everything
    distances = (distances + distances.T) / 2  # exactly symmetric, whatever the BLAS rounding
    np.fill_diagonal(distances, 0.0)
    raw = AgglomerativeClustering(
        n_clusters=None, metric="precomputed", linkage=linkage, distance_threshold=threshold
    ).fit_predict(distances)
    order = {label: i for i, label in enumerate(dict.fromkeys(raw.tolist()))}
    return np.array([order[label] for label in raw.tolist()], dtype=np.int64)


def _describe(cid: int, members: Sequence[ReviewItem], typical: list[str]) -> ReviewCluster:
    return ReviewCluster(
        id=cid,
        size=len(members),
        typical=typical,
        labelled_share=sum(m.label is not None for m in members) / len(members),
        mean_best=float(np.mean([m.best for m in members])),
        first_seen=min(m.created_at for m in members),
        last_seen=max(m.created_at for m in members),
        item_ids=[m.id for m in members],
    )


def cluster_items(
    items: Iterable[ReviewItem],
    embed: Embed,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    linkage: Linkage = "average",
    min_size: int = 2,
    typical: int = 5,
    truncated: bool = False,
    embedder: str = "",
) -> ReviewClusters:
    """Cluster ``items`` (oldest first) by their queries; ``embed`` maps query texts to unit vectors."""
    items = list(items)
    texts: dict[str, str] = {}  # key -> the query as first seen
    for item in items:
        texts.setdefault(_key(item.query), item.query)
    keys = list(texts)
    vectors = np.asarray(embed([texts[k] for k in keys]), dtype=np.float64) if keys else np.zeros((0, 1))
    found = cluster_labels(vectors, threshold=threshold, linkage=linkage)
    labels = dict(zip(keys, found.tolist(), strict=True))
    row = {k: i for i, k in enumerate(keys)}

    groups: dict[int, list[ReviewItem]] = {}
    for item in items:
        groups.setdefault(labels[_key(item.query)], []).append(item)
    # Groups are in the order of their oldest item; the stable sort keeps that order among equal sizes.
    big = sorted((g for g in groups.values() if len(g) >= min_size), key=len, reverse=True)
    clusters = []
    for cid, members in enumerate(big, 1):
        counts: dict[str, int] = {}
        for m in members:
            counts[_key(m.query)] = counts.get(_key(m.query), 0) + 1
        rows = vectors[[row[k] for k in counts]]
        centre = np.average(rows, axis=0, weights=list(counts.values()))  # a query flagged often weighs more
        closeness = rows @ centre
        ranked = sorted(range(len(counts)), key=lambda i: (-round(float(closeness[i]), 6), i))
        names = list(counts)
        clusters.append(_describe(cid, members, [texts[names[i]] for i in ranked[:typical]]))

    rest = [m for m in items if len(groups[labels[_key(m.query)]]) < min_size]
    unclustered = None
    if rest:
        recent = list(dict.fromkeys(_key(m.query) for m in reversed(rest)))[:typical]
        unclustered = _describe(0, rest, [texts[k] for k in recent])
    return ReviewClusters(
        clusters=clusters,
        unclustered=unclustered,
        items=len(items),
        truncated=truncated,
        threshold=threshold,
        embedder=embedder,
    )
