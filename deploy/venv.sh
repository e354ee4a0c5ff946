# Sourced by deploy/up.sh and deploy/test.sh: make .venv and install Sieve into it (again only when
# pyproject.toml changes). SIEVE_EXTRAS picks the extras; SIEVE_TORCH the torch requirement (default: the CPU
# wheel torch==2.13.0; on a GPU machine set SIEVE_TORCH=torch to take your platform's CUDA build).
# Each install phase prints its name, a dot every few seconds while pip runs (with the package pip is on every
# half minute) and how long it took; pip's whole output goes to .venv/install.log.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Sieve needs Python >= 3.11 (set PYTHON=...)")'
extras=${SIEVE_EXTRAS:-all}
torch_req=${SIEVE_TORCH:-torch==2.13.0}
want="$(sha256sum pyproject.toml | cut -c1-16) $torch_req"
installed() { [ "$(cat ".venv/.installed-$1" 2>/dev/null)" = "$want" ]; }

# phase LABEL COMMAND...: run COMMAND with its output in the log, showing that it is alive.
phase() {
  local label=$1 started=$SECONDS ticks=0 pid rc
  shift
  printf '%s ' "$label"
  echo "== $label" >>"$log"
  "$@" >>"$log" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    ticks=$((ticks + 1))
    if [ $((ticks % 30)) -eq 0 ]; then  # every half minute: what pip is on, on a line of its own
      printf ' %ss, %s\n  ' "$((SECONDS - started))" \
        "$(grep -E '^(Collecting|Downloading|Installing|Building|Using cached)' "$log" | tail -1 | cut -c1-70)"
    elif [ $((ticks % 3)) -eq 0 ]; then
      printf '.'
    fi
  done
  if wait "$pid"; then rc=0; else rc=$?; fi
  if [ "$rc" -ne 0 ]; then
    printf ' failed\n'
    awk -v head="== $label" '$0 == head { this = 1 } this' "$log" | grep -v '^WARNING: Location' | tail -25
    echo "install failed; the whole log is in $log" >&2
    exit 1
  fi
  printf ' done in %ss\n' "$((SECONDS - started))"
}

if ! installed "$extras" && ! installed "all,dev"; then
  echo "installing Sieve[$extras] into .venv: 3 steps, a few minutes the first time (log: .venv/install.log)"
  mkdir -p .venv
  log=.venv/install.log
  : >"$log"
  if [ -x .venv/bin/python ]; then echo "[1/3] .venv exists"; else phase "[1/3] creating .venv" "$PY" -m venv .venv; fi
  phase "[2/3] $torch_req (the largest download)" \
    .venv/bin/python -m pip install --disable-pip-version-check "$torch_req"
  phase "[3/3] Sieve[$extras] and its dependencies" \
    .venv/bin/python -m pip install --disable-pip-version-check -e ".[$extras]"
  echo "$want" > ".venv/.installed-$extras"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
