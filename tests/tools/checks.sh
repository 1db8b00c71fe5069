# tests/tools/checks.sh, sourced by the tools' tests beside it: a scratch directory $work (removed on exit);
# fail MESSAGE counts a failed check and prints it; expect FILE TEXT checks that FILE holds the line fragment TEXT;
# exits CODE TEXT COMMAND... checks that COMMAND exits with CODE and prints (stdout or stderr) the line fragment TEXT;
# finish MESSAGE prints MESSAGE where every check passed and exits 0, else exits 1.
set -uo pipefail
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
expect() { grep -qF -- "$2" "$1" || { fail "expected '$2' in:"; cat "$1"; }; }
exits() {
  local code=$1 text=$2 rc
  shift 2
  "$@" > "$work/exits.txt" 2>&1
  rc=$?
  [ $rc = "$code" ] || fail "$* exited $rc, expected $code"
  expect "$work/exits.txt" "$text"
}
finish() {
  [ "$fails" -eq 0 ] && echo "$1"
  exit $((fails > 0))
}
