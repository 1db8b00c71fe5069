# scripts/log_tools.sh: reading the JSONL logs of examples/train in shell checks (sourced by scripts/multi_gpu.sh
# and tests/examples/dist.sh).

# The step losses, growth decisions and validation losses of a log, one line each ("step value", the values as
# the log writes them).
steps() { grep '"type":"step"' "$1" | sed -E 's/.*"loss":([^,]*),.*"step":([0-9]+).*/\2 \1/'; }
growth() { grep '"type":"growth"' "$1" | sed -E 's/"(candidate_entropy|head_entropy)":\[[^]]*\],?//g'; }
evals() { grep '"type":"eval"' "$1" | sed -E 's/.*"step":([0-9]+).*"val_loss":([^,}]*).*/\1 \2/'; }
close() {  # close A B TOL: two lists of "step value" lines agree within a relative tolerance
  paste -d' ' <(echo "$1") <(echo "$2") | awk -v tol="$3" '
    { if ($1 != $3) { print "step " $1 " against " $3; bad = 1 }
      d = $2 - $4; if (d < 0) d = -d; m = $4 < 0 ? -$4 : $4; if (d > tol * m) { print "step " $1 ": " $2 " against " $4; bad = 1 }
      n++ }
    END { if (n == 0) { print "no steps"; bad = 1 } exit bad }'
}
