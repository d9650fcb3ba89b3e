#!/usr/bin/env bash
# One prepared run on an accelerator machine, about 6-7 minutes: overhead.py (both
# models), compile_time.py, a population sweep (sensitivity.py), bytes.py and
# accelerator.py (update only on 42M parameters, a transformer LM's whole step,
# population throughput at N = 1..4096). Writes each
# table (and plot) to DIR (default: $OUT on the lent device machine, else
# benchmarks/results-gpu). Uses the machine's own jax, equinox, optax, flax,
# scikit-learn and matplotlib; recursive_opt is taken from this checkout.
#
#     bash benchmarks/gpu.sh [DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-benchmarks/results-gpu}}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
status=0
run() {  # run LIMIT NAME ARGS...: NAME's table to $out/NAME.md
  local limit=$1 name=$2
  shift 2
  echo "== $name"
  timeout "$limit" "$py" "benchmarks/$name.py" "$@" --png "$out/$name.png" \
    2>&1 | tee "$out/$name.md" || status=1
}
"$py" -c "import jax; print(jax.__version__, jax.devices())" | tee "$out/devices.txt"
run 140 overhead --depths 4 --blocks 20 --large-blocks 10 --large-steps 10
run 70 compile_time --depths 1,2,4,8 --repeats 1
run 60 sensitivity --steps 300 --num 12 --heights 1,2
echo "== bytes"
timeout 90 "$py" benchmarks/bytes.py --depths 3 2>&1 | tee "$out/bytes.md" || status=1
echo "== accelerator"
timeout 200 "$py" benchmarks/accelerator.py 2>&1 | tee "$out/accelerator.md" || status=1
exit $status
