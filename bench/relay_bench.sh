#!/usr/bin/env bash
# Relays to NATS JetStream: backlog throughput against a plain pipelined
# JetStream client, commit-to-PubAck latency at a steady rate, and single-row
# INSERT throughput with a relay running against without.  See
# bench/relay_bench.py and bench/README.md.  Needs nats-server and
# libnats-dev (scripts/lib.sh installs them), gcc, pgbench.
set -euo pipefail
exec /usr/bin/python3 "$(dirname "$0")/relay_bench.py"
