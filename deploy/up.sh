#!/usr/bin/env bash
# Install into .venv and start the embedded stack (Redis, Milvus Lite, a Celery worker, the API),
# ingest the bundled sample corpus and serve search. Ctrl-C (or `.venv/bin/sieve down` from any shell) stops
# everything. Arguments go to `sieve up` (e.g. --port 8100, --home DIR).
# At the end it prints commands that copy safely: the API key stays in its file (<home>/api_key).
set -euo pipefail
source "$(dirname "$0")/venv.sh"
echo "starting the embedded stack (.venv/bin/sieve up $*)"
exec .venv/bin/sieve up "$@"
