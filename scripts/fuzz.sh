#!/usr/bin/env bash
# Fuzzes keel's parsers with libFuzzer (clang, AddressSanitizer and UndefinedBehaviorSanitizer):
# the wire decoders and the MessagePack skipper, the replicated run log's entries, the config
# loader, the sandbox's matching (globs, approval wildcards, grep's regular expressions) and its
# path resolution (no escape from a workspace), the model services' streams (SSE) and bodies, the
# gateway's reading of requests, JSON Schema with tool declarations, and forks of recorded runs. Each target starts from its committed corpus (tests/fuzz/corpus/<target>) and adds
# what it finds in build-fuzz/; a crash leaves its input in build-fuzz/artifacts/ and fails the script.
#   scripts/fuzz.sh [--seconds N] [--jobs J] [target...]
#     default: 30 s each, every target, as many targets at once as there are cores
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=30
jobs=$(nproc)
targets=()
while [ $# -gt 0 ]; do
  case $1 in
    --seconds) seconds=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    -h|--help) sed -n 2,9p "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done
all=(wire transitions config matching paths providers gateway schema forks)
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
command -v clang++ >/dev/null || { echo "fuzz: clang++ is needed (apt-get install clang)" >&2; exit 1; }
command -v ninja >/dev/null || { echo "fuzz: ninja is needed (apt-get install ninja-build)" >&2; exit 1; }
# Each target names only its own file and what lies outside runtime/ and llm/; everything else it
# needs comes from one archive of runtime/ and llm/, from which the linker takes what is called, so
# a function moved to a new file there needs no change here.
sources_of() {
  case $1 in
    wire | transitions | config | providers | schema) echo "" ;;
    matching) echo "sandbox/matching.cpp" ;;
    paths) echo "sandbox/workspace.cpp" ;;
    gateway) echo "gateway/request.cpp" ;;
    forks) echo "actors/run_fork.cpp" ;;
    *) echo "fuzz: no target $1 (${all[*]})" >&2; exit 2 ;;
  esac
}
libs="-lrocksdb -ltomlplusplus -lre2 -lcurl -lspdlog -lfmt"
for t in "${targets[@]}"; do sources_of "$t" >/dev/null; done

# The build: a Ninja file, so that each source is compiled once for every target that uses it,
# on every core, and again only when it or a header it includes changed (depfiles).
mkdir -p build-fuzz/obj build-fuzz/artifacts
{
  echo "cxxflags = -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I$PWD -DMSGPACK_NO_BOOST"
  echo "rule cxx"
  echo "  command = clang++ \$cxxflags \$extra -MD -MF \$out.d -c \$in -o \$out"
  echo "  depfile = \$out.d"
  echo "  deps = gcc"
  echo "  description = fuzz: compiling \$in"
  echo "rule link"
  echo "  command = clang++ \$cxxflags \$in -o \$out \$libs"
  echo "  description = fuzz: linking \$out"
  echo "rule archive"
  echo "  command = rm -f \$out && ar crs \$out \$in"
  echo "  description = fuzz: archiving \$out"
  # toml++ as keel-node links it (Debian's compiled library, not the header-only parser, whose
  # assertions abort on some malformed headers such as "[$x]").
  echo "extra = -DTOML_HEADER_ONLY=0"
  archived=()
  for s in runtime/*.cpp llm/*.cpp; do
    o=obj/${s//\//_}.o
    archived+=("$o")
    echo "build $o: cxx $PWD/$s"
  done
  echo "build libkeel_fuzz.a: archive ${archived[*]}"
  declare -A compiled=()
  for t in "${all[@]}"; do
    objects=()
    for s in tests/fuzz/${t}_fuzz.cpp $(sources_of "$t"); do
      o=obj/${s//\//_}.o
      objects+=("$o")
      [ -n "${compiled[$o]:-}" ] && continue
      compiled[$o]=1
      echo "build $o: cxx $PWD/$s"
    done
    echo "build ${t}_fuzz: link ${objects[*]} libkeel_fuzz.a"
    echo "  libs = $libs"
  done
} > build-fuzz/build.ninja
wanted=()
for t in "${targets[@]}"; do wanted+=("${t}_fuzz"); done
ninja -C build-fuzz "${wanted[@]}" | grep -v "^ninja: " || true
for t in "${targets[@]}"; do [ -x "build-fuzz/${t}_fuzz" ] || { echo "fuzz: $t did not build" >&2; exit 1; }; done

# The runs: `jobs` targets at a time, each with its own log; a crash's input goes to
# build-fuzz/artifacts/<target>-crash-*.
run_one() {
  local t=$1
  local corpus=tests/fuzz/corpus/$t found=build-fuzz/corpus-$t
  mkdir -p "$corpus" "$found"
  (cd build-fuzz && "./${t}_fuzz" -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1 \
     -artifact_prefix="artifacts/$t-" "../$found" "../$corpus" > "$t.log" 2>&1) || true
}
echo "fuzz: ${targets[*]} for $seconds s each, $jobs at a time"
running=0
for t in "${targets[@]}"; do
  if [ "$running" -ge "$jobs" ]; then
    wait -n || true
    running=$((running - 1))
  fi
  run_one "$t" &
  running=$((running + 1))
done
wait
failed=0
for t in "${targets[@]}"; do
  echo "fuzz: $t"
  grep -E "^#[0-9]+.*DONE|stat::number_of_executed_units|stat::peak_rss|ERROR|SUMMARY|Test unit written" "build-fuzz/$t.log" || true
  if [ -n "$(find build-fuzz/artifacts -maxdepth 1 -name "$t-*" -print -quit)" ]; then
    echo "fuzz: $t found a failing input: $(find build-fuzz/artifacts -maxdepth 1 -name "$t-*" | head -3 | tr '\n' ' ')" >&2
    failed=1
  fi
done
[ "$failed" -eq 0 ] || exit 1
echo "fuzz: nothing found"
