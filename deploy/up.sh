#!/usr/bin/env bash
# Install into .venv and start the embedded stack (Redis, Milvus Lite, a Celery worker, the API),
# ingest the bundled sample corpus and serve search. Ctrl-C stops everything. Arguments go to `sieve up`.
set -euo pipefail
source "$(dirname "$0")/venv.sh"
exec .venv/bin/sieve up "$@"
