"""The behaviour every ``VectorStore`` shows, run against each implementation.

Subclass ``VectorStoreContract`` in a ``test_*.py`` module and supply a ``store`` fixture that yields a store
whose collection does not exist yet (``ensure_collection`` has not been called). Set ``FULL_TEXT = False``
for a store without full-text search (Milvus 2.3): there ``bm25`` and ``hybrid`` must raise
``UnsupportedSearchError`` and the tests of what they find are skipped.
"""

from __future__ import annotations

import datetime
import math
from typing import Any

import numpy as np
import pytest

from retrieval.errors import (
    EmbedderMismatchError,
    InvalidFilterError,
    StoreUnavailableError,
    UnsupportedSearchError,
)
from retrieval.fusion import ranked, zscores
from retrieval.store import VectorStore
from retrieval.types import Chunk

DIM = 8
EMBEDDER = "contract-embedder"

INJECTIONS = [
    'x" or tenant != "',
    'x\\" or tenant != "',
    "x' or tenant != '",
    '") or ("1" == "1',
    "x\\",
]
AWKWARD = [
    'say "hi"',
    "back\\slash",
    "trailing\\",
    "it's",
    "line\nbreak\r\ttab",
    "Ünïcødé 日本語 😀",
    "bell\x07nul\x00",
    'x" or tenant != "',
]


def unit(seed: int, dim: int = DIM) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return vector / np.linalg.norm(vector)


def make_chunk(
    tenant: str = "acme",
    document_id: str = "doc-1",
    version: str = "v1",
    position: int = 0,
    *,
    text: str | None = None,
    page: int | None = None,
    metadata: dict[str, Any] | None = None,
) -> Chunk:
    return Chunk(
        tenant=tenant,
        document_id=document_id,
        version=version,
        position=position,
        text=text if text is not None else f"{document_id} {version} #{position}",
        page=page,
        metadata=metadata or {},
    )


def put(store: VectorStore, chunks: list[Chunk], vectors: list[np.ndarray] | None = None) -> None:
    store.upsert(chunks, np.stack(vectors if vectors is not None else [unit(i) for i in range(len(chunks))]))


MODES = ["dense", "bm25", "hybrid"]
TEXTS = [
    "The mitochondria is the powerhouse of the cell",
    "Photosynthesis turns light into chemical energy in chloroplasts",
    "The rare enzyme zorbulase cleaves a peptide bond",
    "Plate tectonics moves continents slowly",
    "北京是中国的首都",
    "上海是一个大城市",
    "Cells divide by mitosis during the cell cycle",
]


def search_in_mode(
    store: VectorStore, full_text: bool, mode: str, tenant: str = "acme", **kwargs: Any
) -> list[Any] | None:
    """``search`` in ``mode``; without full text, check that modes but dense raise, and return None."""
    if mode != "dense" and not full_text:
        with pytest.raises(UnsupportedSearchError):
            store.search(tenant, unit(0), mode=mode, query_text="zorbulase", **kwargs)
        return None
    return store.search(tenant, unit(0), mode=mode, query_text="zorbulase", **kwargs)


class VectorStoreContract:
    FULL_TEXT = True

    @pytest.fixture
    def ready(self, store: VectorStore) -> VectorStore:
        store.ensure_collection(embedder_name=EMBEDDER, dimension=DIM)
        return store

    # --- writes and reads ---------------------------------------------------------------------------------

    def test_upserted_chunk_is_found_with_its_fields_and_score_one(self, ready: VectorStore) -> None:
        chunk = make_chunk(page=3, metadata={"lang": "en"}, text="Line one\nline two — ü")
        put(ready, [chunk], [unit(7)])

        hits = ready.search("acme", unit(7), limit=5)

        assert [hit.id for hit in hits] == [chunk.id]
        hit = hits[0]
        assert hit.score == pytest.approx(1.0, abs=1e-4)
        assert (hit.document_id, hit.version, hit.position, hit.page) == ("doc-1", "v1", 0, 3)
        assert hit.text == chunk.text
        assert hit.metadata == {"lang": "en"}
        assert ready.count("acme") == 1

    def test_upserting_the_same_ids_replaces_instead_of_adding(self, ready: VectorStore) -> None:
        for revision in range(5):
            chunks = [make_chunk(position=p, text=f"revision {revision}") for p in range(3)]
            put(ready, chunks)

        assert ready.count("acme") == 3
        assert ready.count("acme", "doc-1") == 3
        hits = ready.search("acme", unit(0), limit=10)
        assert len(hits) == 3
        assert {hit.text for hit in hits} == {"revision 4"}

    def test_empty_upsert_is_a_no_op(self, ready: VectorStore) -> None:
        ready.upsert([], np.zeros((0, DIM), dtype=np.float32))
        assert ready.count("acme") == 0

    def test_page_none_and_page_zero_round_trip(self, ready: VectorStore) -> None:
        put(ready, [make_chunk(position=0, page=None), make_chunk(position=1, page=0)], [unit(1), unit(2)])

        assert ready.search("acme", unit(1), limit=1)[0].page is None
        assert ready.search("acme", unit(2), limit=1)[0].page == 0

    def test_metadata_json_round_trips(self, ready: VectorStore) -> None:
        metadata = {
            "title": 'Ünïcødé 日本語 😀 "quoted" back\\slash',
            "nested": {"list": [1, 2.5, "x", None, True], "deeper": {"k": "v"}},
            "empty": {},
            "count": 3,
            "flag": False,
        }
        put(ready, [make_chunk(metadata=metadata)])

        assert ready.search("acme", unit(0), limit=1)[0].metadata == metadata

    def test_metadata_that_is_not_json_is_refused(self, ready: VectorStore) -> None:
        with pytest.raises(ValueError, match="JSON"):
            put(ready, [make_chunk(metadata={"when": datetime.datetime(2024, 1, 1)})])

    def test_vectors_of_the_wrong_shape_are_refused(self, ready: VectorStore) -> None:
        with pytest.raises(ValueError):
            put(ready, [make_chunk()], [unit(0, DIM + 1)])
        with pytest.raises(ValueError):
            ready.upsert([make_chunk(position=0), make_chunk(position=1)], np.stack([unit(0)]))
        with pytest.raises(ValueError):
            ready.search("acme", unit(0, DIM - 1), limit=1)

    # --- search -------------------------------------------------------------------------------------------

    def test_results_are_the_nearest_best_first_and_limited(self, ready: VectorStore) -> None:
        vectors = [unit(seed) for seed in range(12)]
        chunks = [make_chunk(position=p) for p in range(12)]
        put(ready, chunks, vectors)
        query = unit(99)
        expected = sorted(range(12), key=lambda i: -float(vectors[i] @ query))[:4]

        hits = ready.search("acme", query, limit=4)

        assert [hit.id for hit in hits] == [chunks[i].id for i in expected]
        scores = [hit.score for hit in hits]
        assert scores == sorted(scores, reverse=True)
        assert scores == pytest.approx([float(vectors[i] @ query) for i in expected], abs=1e-4)

    def test_score_is_cosine_similarity(self, ready: VectorStore) -> None:
        base = np.zeros(DIM, dtype=np.float32)
        base[0] = 1.0
        orthogonal = np.zeros(DIM, dtype=np.float32)
        orthogonal[1] = 1.0
        put(ready, [make_chunk(position=0), make_chunk(position=1)], [base, orthogonal])

        hits = ready.search("acme", base * 3.0, limit=2)

        assert [round(hit.score, 4) for hit in hits] == [1.0, 0.0]

    def test_limit_zero_and_unknown_tenant_return_nothing(self, ready: VectorStore) -> None:
        put(ready, [make_chunk()])
        assert ready.search("acme", unit(0), limit=0) == []
        assert ready.search("nobody", unit(0), limit=5) == []
        assert ready.count("nobody") == 0

    # --- tenants ------------------------------------------------------------------------------------------

    def test_tenants_only_see_their_own_chunks(self, ready: VectorStore) -> None:
        ours = [make_chunk("acme", position=p) for p in range(2)]
        theirs = make_chunk("globex")  # same document id, same vector as ours[0]
        put(ready, [*ours, theirs], [unit(0), unit(1), unit(0)])

        assert {hit.id for hit in ready.search("acme", unit(0), limit=10)} == {c.id for c in ours}
        assert [hit.id for hit in ready.search("globex", unit(0), limit=10)] == [theirs.id]
        assert ready.count("acme") == 2
        assert ready.count("globex") == 1
        assert ready.count("globex", "doc-1") == 1

    @pytest.mark.parametrize("tenant", ['evil" or tenant != "', "back\\slash\\", "it's"])
    def test_tenant_names_with_quotes_stay_isolated(self, ready: VectorStore, tenant: str) -> None:
        mine, other = make_chunk(tenant), make_chunk("acme")
        put(ready, [mine, other], [unit(0), unit(0)])

        assert [hit.id for hit in ready.search(tenant, unit(0), limit=10)] == [mine.id]
        assert ready.count(tenant) == 1
        ready.delete_document(tenant, "doc-1")
        assert ready.count(tenant) == 0
        assert ready.count("acme") == 1

    # --- filters ------------------------------------------------------------------------------------------

    @pytest.fixture
    def two_documents(self, ready: VectorStore) -> tuple[Chunk, Chunk]:
        a = make_chunk(
            document_id="doc-a", metadata={"lang": "en", "year": 2024, "public": True, "ratio": 0.5}
        )
        b = make_chunk(
            document_id="doc-b", metadata={"lang": "de", "year": 2023, "public": False, "ratio": 0.25}
        )
        put(ready, [a, b], [unit(0), unit(1)])
        return a, b

    @pytest.mark.parametrize(
        ("filters", "expected"),
        [
            ({"lang": "en"}, "doc-a"),
            ({"year": 2023}, "doc-b"),
            ({"public": True}, "doc-a"),
            ({"public": False}, "doc-b"),
            ({"ratio": 0.25}, "doc-b"),
            ({"document_id": "doc-a"}, "doc-a"),
            ({"lang": "de", "year": 2023, "document_id": "doc-b"}, "doc-b"),
        ],
    )
    def test_filters_select_matching_chunks(
        self, ready: VectorStore, two_documents: tuple[Chunk, Chunk], filters: dict[str, Any], expected: str
    ) -> None:
        hits = ready.search("acme", unit(0), limit=10, filters=filters)
        assert [hit.document_id for hit in hits] == [expected]

    @pytest.mark.parametrize("filters", [{"lang": "fr"}, {"missing": "x"}, {"lang": "en", "year": 2023}])
    def test_filters_that_match_nothing(
        self, ready: VectorStore, two_documents: tuple[Chunk, Chunk], filters: dict[str, Any]
    ) -> None:
        assert ready.search("acme", unit(0), limit=10, filters=filters) == []

    @pytest.mark.parametrize("value", AWKWARD)
    def test_filter_values_with_quotes_and_escapes_match_exactly(
        self, ready: VectorStore, value: str
    ) -> None:
        target = make_chunk(document_id=value, metadata={"tag": value})
        decoy = make_chunk(document_id="decoy", metadata={"tag": "plain"})
        put(ready, [target, decoy], [unit(0), unit(0)])

        assert [hit.id for hit in ready.search("acme", unit(0), limit=10, filters={"tag": value})] == [
            target.id
        ]
        by_document = ready.search("acme", unit(0), limit=10, filters={"document_id": value})
        assert [hit.id for hit in by_document] == [target.id]
        assert ready.count("acme", value) == 1

    @pytest.mark.parametrize("value", INJECTIONS)
    def test_filter_values_cannot_inject_expressions(self, ready: VectorStore, value: str) -> None:
        put(ready, [make_chunk("acme", metadata={"tag": "a"}), make_chunk("globex", metadata={"tag": "g"})])

        for key in ("tag", "document_id"):
            assert ready.search("acme", unit(0), limit=10, filters={key: value}) == []
        assert ready.count("acme", value) == 0
        ready.delete_document("acme", value)
        ready.delete_document("acme", "doc-1", version=value)
        assert ready.count("acme") == 1  # the version clause matched nothing
        ready.delete_document("acme", "doc-1", except_versions=[value, "v-other"])
        assert ready.count("acme") == 0  # the except clause only kept versions that do not exist
        assert ready.count("globex") == 1

    @pytest.mark.parametrize(
        "filters",
        [
            {'tag"]': "x"},
            {"tag or 1": "x"},
            {"a.b": "x"},
            {"": "x"},
            {"tag": None},
            {"tag": [1, 2]},
            {"tag": {"a": 1}},
            {"tag": math.nan},
            {"tag": math.inf},
            {"document_id": 5},
        ],
    )
    def test_filters_that_cannot_be_expressed_safely_are_refused(
        self, store: VectorStore, filters: dict[str, Any]
    ) -> None:
        # Refused before the store is asked anything: bad input is the caller's error, collection or not.
        with pytest.raises(InvalidFilterError):
            store.search("acme", unit(0), limit=10, filters=filters)

    # --- deletes ------------------------------------------------------------------------------------------

    def test_delete_document_removes_every_chunk_of_it_only(self, ready: VectorStore) -> None:
        put(
            ready,
            [
                *(make_chunk(position=p) for p in range(3)),
                make_chunk(document_id="doc-2"),
                make_chunk("globex"),
            ],
        )

        ready.delete_document("acme", "doc-1")

        assert ready.count("acme", "doc-1") == 0
        assert ready.count("acme") == 1
        assert ready.count("globex", "doc-1") == 1
        assert {hit.document_id for hit in ready.search("acme", unit(0), limit=10)} == {"doc-2"}

    def test_delete_document_except_versions_keeps_those_versions(self, ready: VectorStore) -> None:
        old = [make_chunk(version="v1", position=p) for p in range(3)]
        new = [make_chunk(version="v2", position=p) for p in range(2)]
        newer = [make_chunk(version="v3", position=0)]
        put(ready, [*old, *new, *newer])

        ready.delete_document("acme", "doc-1", except_versions=["v2", "v3"])

        assert ready.count("acme", "doc-1") == 3
        assert {hit.id for hit in ready.search("acme", unit(0), limit=10)} == {c.id for c in [*new, *newer]}

    def test_delete_document_version_removes_only_that_version(self, ready: VectorStore) -> None:
        old = [make_chunk(version="v1", position=p) for p in range(3)]
        new = [make_chunk(version="v2", position=p) for p in range(2)]
        put(ready, [*old, *new, make_chunk("globex", version="v1")])

        ready.delete_document("acme", "doc-1", version="v1")

        assert {hit.id for hit in ready.search("acme", unit(0), limit=10)} == {c.id for c in new}
        assert ready.count("globex") == 1

    def test_deleting_an_unknown_document_is_a_no_op(self, ready: VectorStore) -> None:
        put(ready, [make_chunk()])
        ready.delete_document("acme", "never-stored")
        assert ready.count("acme") == 1

    # --- search modes: bm25 and hybrid ----------------------------------------------------------------------

    @pytest.fixture
    def corpus(self, ready: VectorStore) -> list[Chunk]:
        if not self.FULL_TEXT:
            pytest.skip("no full-text search on this server (test_modes_without_full_text_raise covers it)")
        chunks = [make_chunk(document_id=f"doc-{i}", text=text) for i, text in enumerate(TEXTS)]
        put(ready, chunks, [unit(i) for i in range(len(chunks))])
        return chunks

    def test_bm25_finds_a_rare_exact_term_that_dense_search_misses(
        self, ready: VectorStore, corpus: list[Chunk]
    ) -> None:
        dense = ready.search("acme", unit(3), limit=1)
        bm25 = ready.search("acme", unit(3), limit=5, mode="bm25", query_text="zorbulase")

        assert [hit.id for hit in dense] == [corpus[3].id]
        assert [hit.id for hit in bm25] == [corpus[2].id]
        assert bm25[0].text == TEXTS[2] and bm25[0].score > 0

    def test_bm25_ranks_better_matches_first_with_positive_scores(
        self, ready: VectorStore, corpus: list[Chunk]
    ) -> None:
        hits = ready.search("acme", None, limit=5, mode="bm25", query_text="mitochondria cell")

        assert [hit.id for hit in hits] == [corpus[0].id, corpus[6].id]
        assert hits[0].score > hits[1].score > 0

    def test_bm25_without_a_matching_term_finds_nothing(
        self, ready: VectorStore, corpus: list[Chunk]
    ) -> None:
        assert ready.search("acme", None, limit=5, mode="bm25", query_text="quasar") == []
        assert ready.search("acme", None, limit=5, mode="bm25", query_text="") == []
        assert ready.search("acme", None, limit=0, mode="bm25", query_text="zorbulase") == []

    def test_chinese_query_matches_chinese_text(self, ready: VectorStore, corpus: list[Chunk]) -> None:
        hits = ready.search("acme", None, limit=5, mode="bm25", query_text="中国的首都")
        assert [hit.id for hit in hits] == [corpus[4].id]

    def test_hybrid_by_default_fuses_the_legs_standardised_scores(
        self, ready: VectorStore, corpus: list[Chunk]
    ) -> None:
        query, text, limit = unit(0), "mitochondria cell zorbulase", 3
        dense = ready.search("acme", query, limit=limit)
        bm25 = ready.search("acme", None, limit=limit, mode="bm25", query_text=text)
        expected = zscores([{h.id: h.score for h in dense}, {h.id: h.score for h in bm25}])

        hits = ready.search("acme", query, limit=limit, mode="hybrid", query_text=text)

        assert [h.id for h in hits] == [key for key, _ in ranked(expected)][:limit]
        assert {h.id: h.score for h in hits} == pytest.approx({h.id: expected[h.id] for h in hits})

    @pytest.mark.parametrize(("rrf_k", "weights"), [(60, None), (1, (2.0, 1.0))])
    def test_hybrid_is_the_union_of_both_legs_ranked_by_rrf(
        self, ready: VectorStore, corpus: list[Chunk], rrf_k: int, weights: tuple[float, float] | None
    ) -> None:
        query, text, limit = unit(0), "mitochondria cell zorbulase", 3
        dense = ready.search("acme", query, limit=limit)
        bm25 = ready.search("acme", None, limit=limit, mode="bm25", query_text=text)
        w_dense, w_bm25 = weights or (1.0, 1.0)
        expected: dict[str, float] = {}
        for weight, leg in ((w_dense, dense), (w_bm25, bm25)):
            for rank, hit in enumerate(leg, start=1):
                expected[hit.id] = expected.get(hit.id, 0.0) + weight / (rrf_k + rank)

        hits = ready.search(
            "acme",
            query,
            limit=limit,
            mode="hybrid",
            query_text=text,
            fusion="rrf",
            rrf_k=rrf_k,
            weights=weights,
        )

        assert len(hits) == limit
        assert {hit.id for hit in hits} <= expected.keys()  # drawn from the union of the two legs
        assert {h.id: h.score for h in hits} == pytest.approx({h.id: expected[h.id] for h in hits})
        scores = [hit.score for hit in hits]
        assert scores == sorted(scores, reverse=True)
        left_out = [score for key, score in expected.items() if key not in {hit.id for hit in hits}]
        assert min(scores) >= max(left_out, default=0.0)  # the best of the union, not just of one leg
        cosine = {hit.id: hit.score for hit in ready.search("acme", query, limit=10)}
        for hit in hits:  # the dense leg's cosine rides along where the chunk came from it
            assert hit.dense_score == (
                None if hit.id not in {d.id for d in dense} else pytest.approx(cosine[hit.id])
            )
        assert all(hit.dense_score is None for hit in bm25)
        assert all(hit.dense_score == pytest.approx(hit.score) for hit in dense)

    def test_weighted_fusion_scales_each_leg_and_follows_the_weights(
        self, ready: VectorStore, corpus: list[Chunk]
    ) -> None:
        query, text = unit(3), "mitochondria cell zorbulase"
        dense = ready.search("acme", query, limit=4)
        bm25 = ready.search("acme", None, limit=4, mode="bm25", query_text=text)
        expected: dict[str, float] = {}
        for leg in (dense, bm25):
            low, high = min(h.score for h in leg), max(h.score for h in leg)
            for hit in leg:
                expected[hit.id] = expected.get(hit.id, 0.0) + (hit.score - low) / (high - low)

        hits = ready.search("acme", query, limit=4, mode="hybrid", query_text=text, fusion="weighted")
        only_dense = ready.search(
            "acme", query, limit=4, mode="hybrid", query_text=text, fusion="weighted", weights=(1.0, 0.0)
        )
        only_bm25 = ready.search(
            "acme", query, limit=4, mode="hybrid", query_text=text, fusion="weighted", weights=(0.0, 1.0)
        )

        assert {h.id: h.score for h in hits} == pytest.approx({h.id: expected[h.id] for h in hits}, abs=1e-4)
        assert (only_dense[0].id, only_dense[0].score) == (dense[0].id, pytest.approx(1.0))
        assert (only_bm25[0].id, only_bm25[0].score) == (bm25[0].id, pytest.approx(1.0))

    @pytest.mark.parametrize("mode", MODES)
    def test_tenants_stay_isolated_in_every_mode(self, ready: VectorStore, mode: str) -> None:
        ours = make_chunk("acme", text="zorbulase assay")
        theirs = make_chunk("globex", text="zorbulase assay")  # same id inputs but tenant, same vector
        put(ready, [ours, theirs], [unit(0), unit(0)])

        hits = search_in_mode(ready, self.FULL_TEXT, mode, limit=10)

        assert hits is None or [hit.id for hit in hits] == [ours.id]

    @pytest.mark.parametrize("mode", MODES)
    def test_filters_hold_in_every_mode(self, ready: VectorStore, mode: str) -> None:
        a = make_chunk(document_id="doc-a", text="zorbulase in English", metadata={"lang": "en"})
        b = make_chunk(document_id="doc-b", text="zorbulase auf Deutsch", metadata={"lang": "de"})
        put(ready, [a, b], [unit(0), unit(0)])

        hits = search_in_mode(ready, self.FULL_TEXT, mode, limit=10, filters={"lang": "de"})

        assert hits is None or [hit.id for hit in hits] == [b.id]

    @pytest.mark.parametrize(
        "arguments",
        [
            {"mode": "fuzzy", "query_text": "x"},
            {"mode": "bm25"},
            {"mode": "hybrid"},
            {"mode": "hybrid", "query_text": "x", "fusion": "max"},
            {"mode": "hybrid", "query_text": "x", "weights": (1.0,)},
            {"mode": "hybrid", "query_text": "x", "weights": (0.0, 0.0)},
            {"mode": "hybrid", "query_text": "x", "rrf_k": -1},
        ],
    )
    def test_search_arguments_no_store_can_honour_are_refused(
        self, store: VectorStore, arguments: dict[str, Any]
    ) -> None:
        with pytest.raises(ValueError):
            store.search("acme", unit(0), limit=5, **arguments)
        with pytest.raises(ValueError):
            store.search("acme", None, limit=5)

    def test_modes_without_full_text_raise(self, ready: VectorStore) -> None:
        if self.FULL_TEXT:
            pytest.skip("this store has full-text search")
        put(ready, [make_chunk(text="zorbulase")], [unit(0)])
        for mode in ("bm25", "hybrid"):
            with pytest.raises(UnsupportedSearchError, match="dense"):
                ready.search("acme", unit(0), limit=5, mode=mode, query_text="zorbulase")
        assert len(ready.search("acme", unit(0), limit=5)) == 1

    # --- collection and embedder --------------------------------------------------------------------------

    def test_ensure_collection_again_with_the_same_embedder_keeps_the_data(self, ready: VectorStore) -> None:
        put(ready, [make_chunk()])
        ready.ensure_collection(embedder_name=EMBEDDER, dimension=DIM)
        ready.ensure_collection(embedder_name=EMBEDDER, dimension=DIM)
        assert ready.count("acme") == 1

    @pytest.mark.parametrize(("name", "dimension"), [("other-embedder", DIM), (EMBEDDER, DIM * 2)])
    def test_ensure_collection_with_another_embedder_is_refused(
        self, ready: VectorStore, name: str, dimension: int
    ) -> None:
        put(ready, [make_chunk()])

        with pytest.raises(EmbedderMismatchError) as raised:
            ready.ensure_collection(embedder_name=name, dimension=dimension)

        message = str(raised.value)
        assert EMBEDDER in message and name in message and str(dimension) in message
        assert ready.count("acme") == 1

    def test_using_a_collection_that_does_not_exist_is_unavailable(self, store: VectorStore) -> None:
        with pytest.raises(StoreUnavailableError):
            store.search("acme", unit(0), limit=1)
        with pytest.raises(StoreUnavailableError):
            put(store, [make_chunk()])

    def test_ping(self, store: VectorStore) -> None:
        store.ping()

    def test_drop_removes_the_collection_and_another_embedder_may_build_it_again(
        self, ready: VectorStore
    ) -> None:
        put(ready, [make_chunk()])

        ready.drop()
        ready.drop()  # idempotent

        with pytest.raises(StoreUnavailableError):
            ready.search("acme", unit(0), limit=1)
        ready.ensure_collection(embedder_name="other-embedder", dimension=DIM)
        assert ready.count("acme") == 0
