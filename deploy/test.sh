#!/usr/bin/env bash
# Install into .venv (with the dev extras) and run the test suite: unit tests and the integration tests on
# real Redis / Milvus Lite / Milvus server / Celery worker processes the tests start themselves.
# GPU tests skip here (run them on a GPU machine with -m gpu). Arguments go to pytest.
# -m "not gpu" replaces the fast-tier default in pyproject's addopts (addopts come first; the last -m wins), so
# the slow and integration tiers run here too; a -m among the arguments replaces it in turn.
set -euo pipefail
SIEVE_EXTRAS=all,dev source "$(dirname "$0")/venv.sh"
# The browser tests (tests/browser) drive Debian's Chromium with Playwright for Python (its own browser download
# cannot run offline and is never used); they skip, saying why, without /usr/bin/chromium.
.venv/bin/python -c "import playwright" 2>/dev/null ||
  .venv/bin/python -m pip install -q --disable-pip-version-check playwright ||
  echo "could not install playwright (the browser tests will skip)" >&2
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null &&
   [ -z "${SIEVE_NO_CHROMIUM_INSTALL:-}" ]; then
  echo "installing Debian's chromium for the browser tests (SIEVE_NO_CHROMIUM_INSTALL=1 skips this)…"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >.venv/chromium.log 2>&1 ||
    echo "could not install chromium (the browser tests will skip); the log is .venv/chromium.log" >&2
fi
exec .venv/bin/python -m pytest -m "not gpu" -p no:cacheprovider "$@"
