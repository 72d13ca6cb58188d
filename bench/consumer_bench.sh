#!/usr/bin/env bash
# Stream consumer benchmarks (see consumer_bench.py); PG* settings from the environment.
set -euo pipefail
exec /usr/bin/python3 "$(dirname "$0")/consumer_bench.py"
