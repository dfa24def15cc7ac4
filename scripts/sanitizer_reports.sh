#!/usr/bin/env bash
# Fails (exit 1), printing them, when any file under DIR holds a sanitizer's report; a file with
# no report in it (a list of the suppressions used) does not count.
#   scripts/sanitizer_reports.sh DIR NAME    NAME: who says so ("sanitize", "chaos")
set -euo pipefail
dir=$1
name=$2
found=$(grep -lE "ERROR: |WARNING: |runtime error|SUMMARY: " "$dir"/* 2>/dev/null || true)
[ -z "$found" ] && exit 0
echo "$name: sanitizer reports from $(printf '%s\n' "$found" | wc -l) processes (in $dir):" >&2
for f in $found; do
  echo "--- $f" >&2
  head -80 "$f" >&2
done
exit 1
