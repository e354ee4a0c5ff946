"""The review-sink contract on the in-memory sink and on the Redis queue over fakeredis (the integration tier
runs it on a real redis-server)."""

from __future__ import annotations

import fakeredis
import pytest

from api.review import ReviewQueue, ReviewSink
from api.review_memory import MemoryReviewSink
from tests.contract.review_sink import ReviewSinkContract


class TestMemoryReviewSink(ReviewSinkContract):
    @pytest.fixture
    def sink(self) -> ReviewSink:
        return MemoryReviewSink()


class TestReviewQueueOnFakeRedis(ReviewSinkContract):
    @pytest.fixture
    def sink(self) -> ReviewSink:
        return ReviewQueue(fakeredis.FakeRedis(decode_responses=True))
