# Sourced by deploy/up.sh and deploy/test.sh: make .venv and install Sieve into it (again only when
# pyproject.toml changes). SIEVE_EXTRAS picks the extras; SIEVE_TORCH the torch requirement (default: the CPU
# wheel torch==2.13.0; on a GPU machine set SIEVE_TORCH=torch to take your platform's CUDA build).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Sieve needs Python >= 3.11 (set PYTHON=...)")'
[ -x .venv/bin/python ] || "$PY" -m venv .venv
extras=${SIEVE_EXTRAS:-all}
torch_req=${SIEVE_TORCH:-torch==2.13.0}
want="$(sha256sum pyproject.toml | cut -c1-16) $torch_req"
installed() { [ "$(cat ".venv/.installed-$1" 2>/dev/null)" = "$want" ]; }
if ! installed "$extras" && ! installed "all,dev"; then
  echo "installing Sieve[$extras] into .venv (first run takes a minute or two)…"
  log=.venv/install.log
  if ! { .venv/bin/python -m pip install --disable-pip-version-check "$torch_req" &&
         .venv/bin/python -m pip install --disable-pip-version-check -e ".[$extras]"; } >"$log" 2>&1; then
    grep -v '^WARNING: Location' "$log" | tail -25
    echo "install failed; the whole log is in $log" >&2
    exit 1
  fi
  echo "$want" > ".venv/.installed-$extras"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
