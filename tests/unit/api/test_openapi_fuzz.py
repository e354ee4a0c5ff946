"""A bounded schemathesis run over the API's own OpenAPI document, on fakes: every operation gets generated
valid (positive) and invalid (negative) requests with a valid API key; no answer may be a 5xx, and every
documented answer must match its schema and content type. Examples per operation and mode: ``EXAMPLES``."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import hypothesis
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from api.app import create_app
from ingestion.settings import IngestSettings
from tests.support import compat_harness as harness
from tests.support.fakes import FakeReranker
from tests.support.reporting import report

pytestmark = pytest.mark.slow  # hundreds of generated requests

EXAMPLES = 10
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


def test_no_5xx_and_no_schema_violation(tmp_path: Path) -> None:
    settings = harness.settings(IngestSettings(data_dir=tmp_path / "files"), max_rerank_documents=20)
    app = create_app(settings, resources_factory=harness.resources_factory(FakeReranker()))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    statuses: Counter[tuple[str, int]] = Counter()
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15

    for operation in operations:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            @hypothesis.settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
                suppress_health_check=list(hypothesis.HealthCheck),
            )
            def run(case: schemathesis.Case) -> None:
                response = case.call(headers=harness.AUTH)
                statuses[(case.operation.label, response.status_code)] += 1
                case.validate_response(response, checks=CHECKS, headers=harness.AUTH)

            try:
                run()
            except hypothesis.errors.Unsatisfiable:  # nothing to make invalid (no parameters, free strings)
                continue
            # A finding is whatever run() raises: a failed check, or an exception the app let through the
            # TestClient. Every operation's findings are collected and reported together.
            except Exception as exc:  # noqa: BLE001 - see above: any finding, of any type
                failures.append(f"{operation.label} ({mode.value}): {str(exc)[:2000]}")

    total = sum(statuses.values())
    report(f"schemathesis: {len(operations)} operations, {total} cases")
    for (label, status), count in sorted(statuses.items()):
        report(f"  {label:45} {status}: {count}")
    assert not failures, "\n\n".join(failures)
    assert not any(status >= 500 for _, status in statuses)
