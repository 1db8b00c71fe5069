# Sourced by scripts/fuzz.sh and scripts/sanitize.sh, which pick a compiler by what it can link.
# compiler_links CXX FLAGS SOURCE: true when CXX is on the PATH and compiles and links SOURCE (a line of C++) with
# FLAGS (split at spaces).
compiler_links() {
  command -v "$1" > /dev/null 2>&1 || return 1
  local dir rc=0
  dir=$(mktemp -d)
  printf '%s\n' "$3" > "$dir/probe.cpp"
  # shellcheck disable=SC2086  # FLAGS are several arguments
  "$1" $2 "$dir/probe.cpp" -o "$dir/probe" > /dev/null 2>&1 || rc=1
  rm -rf "$dir"
  return $rc
}
