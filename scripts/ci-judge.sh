#!/usr/bin/env bash
# CI: the judge live over loopback against `vlmtest serve` on the default model (issue 4).
#
# 1. Builds the CLI, starts `vlmtest serve` on 127.0.0.1 (a free port), waits for /health.
# 2. Runs one suite with the live judge (cache off, so every judge call goes over HTTP): the
#    `judge_smoke` suite of fixtures/judge (3 probes × correctness/relevancy/faithfulness), where a
#    judge error fails its case; VLMTEST_JUDGE_URL/MODEL point at the server.
# 3. Runs the judge's integration tests (fault-injecting stub + in-process serve on SmolLM2).
# The server is stopped by its PID on exit, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE_FLAG=${VLMTEST_CI_PROFILE_FLAG:---release}
SUITE=${VLMTEST_JUDGE_SUITE:-judge_smoke}
ROOT=${VLMTEST_JUDGE_ROOT:-fixtures/judge}
PORT=${VLMTEST_JUDGE_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}

cargo build -j "${CARGO_JOBS:-2}" $PROFILE_FLAG --bin vlmtest
BIN=target/$([ "$PROFILE_FLAG" = "--release" ] && echo release || echo debug)/vlmtest

"$BIN" serve --model smollm2 --host 127.0.0.1 --port "$PORT" --max-tokens 256 &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true' EXIT

for _ in $(seq 1 120); do
  if curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$SERVER" 2>/dev/null; then echo "vlmtest serve exited early" >&2; exit 2; fi
  sleep 1
done
curl -fsS "http://127.0.0.1:$PORT/v1/models"; echo

export VLMTEST_JUDGE_URL="http://127.0.0.1:$PORT/v1"
export VLMTEST_JUDGE_MODEL=smollm2
export VLMTEST_JUDGE_CACHE=off
VLMTEST_ROOT="$ROOT" "$BIN" run --suite "$SUITE"

cargo test -j "${CARGO_JOBS:-2}" $PROFILE_FLAG --test integration judge_
