#!/usr/bin/env bash
# Scale check (issue 15): `vlmtest run` over N replayed validation rows for each N given
# (default 10000 100000 1000000), cold (answers read from the replay file) and warm (from the
# answer cache), on one core; prints wall time, peak memory and µs per case side by side, so
# linear growth shows as a constant last column.
#   scripts/scale.sh [N ...]        (uses target/release/vlmtest, else target/debug/vlmtest)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/vlmtest
[ -x "$bin" ] || bin=target/debug/vlmtest
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 2; }
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(10000 100000 1000000)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf '%-9s %-5s %9s %10s %10s\n' cases pass wall_s peak_MiB us_per_case
for n in "${sizes[@]}"; do
  d="$work/$n"
  mkdir -p "$d/cases"
  python3 - "$d" "$n" <<'PY'
import sys
d, n = sys.argv[1], int(sys.argv[2])
with open(f"{d}/cases/bench.jsonl", "w") as rows, open(f"{d}/answers.jsonl", "w") as ans:
    for i in range(n):
        nm = 10 + i % 90
        rows.write('{"id": "row_%d", "conversations": [{"role": "user", "content": "Bolt %d takes %d Nm. What torque does bolt %d need?"}, {"role": "assistant", "content": "Bolt %d takes %d Nm."}], "metadata": {"category": "torque"}}\n' % (i, i, nm, i, i, nm))
        said = nm + 1 if i % 3 == 0 else nm
        ans.write('{"name": "bench::torque::row_%d", "answer": "It needs %d N\\u00b7m."}\n' % (i, said))
with open(f"{d}/vlmtest.toml", "w") as f:
    f.write('[model]\nspec = "replay:answers.jsonl"\n[suites.bench]\nrow_scorers = ["numbers", "token_f1"]\nbootstrap = 0\n')
PY
  for pass in cold warm; do
    # exit 1 is expected (a third of the answers are wrong); anything else is a failure.
    set +e
    /usr/bin/time -f '%e %M' -o "$work/time" env RAYON_NUM_THREADS=1 taskset -c 0 \
      "$bin" run --root "$d" --format json >/dev/null 2>"$work/err"
    code=$?
    set -e
    if [ "$code" -gt 1 ]; then cat "$work/err" >&2; exit "$code"; fi
    read -r wall kib < <(tail -1 "$work/time")
    awk -v n="$n" -v p="$pass" -v w="$wall" -v k="$kib" \
      'BEGIN { printf "%-9d %-5s %9.2f %10.0f %10.1f\n", n, p, w, k / 1024, w * 1e6 / n }'
  done
done
