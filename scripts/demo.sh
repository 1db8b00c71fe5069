#!/usr/bin/env bash
# The main job: trains Vanilla, Block Loop and SGT (K_max = 1, 2, 3) on the embedded k-hop task and prints the
# comparison table. Extra arguments go to the compare program (e.g. --data FILE --steps 400).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh compare
exec "${SGT_BUILD_DIR:-build}/examples/compare" "$@"
