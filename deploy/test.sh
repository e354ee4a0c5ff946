#!/usr/bin/env bash
# Install into .venv (with the dev extras) and run the test suite: unit tests and the integration tests on
# real Redis / Milvus Lite / Milvus server / Celery worker processes the tests start themselves.
# GPU tests skip here (run them on a GPU machine with -m gpu). Arguments go to pytest.
# -m "not gpu" replaces the fast-tier default in pyproject's addopts (addopts come first; the last -m wins), so
# the slow and integration tiers run here too; a -m among the arguments replaces it in turn.
set -euo pipefail
SIEVE_EXTRAS=all,dev source "$(dirname "$0")/venv.sh"
exec .venv/bin/python -m pytest -m "not gpu" -p no:cacheprovider "$@"
