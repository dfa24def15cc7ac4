#!/usr/bin/env bash
# Fuzzes keel's parsers with libFuzzer (clang, AddressSanitizer and UndefinedBehaviorSanitizer):
# the wire decoders and the MessagePack skipper, the replicated run log's entries, the config
# loader, the sandbox's matching (globs, approval wildcards, grep's regular expressions) and its
# path resolution (no escape from a workspace), the model services' streams (SSE) and bodies, the
# gateway's reading of requests. Each target starts from its committed corpus (tests/fuzz/corpus/<target>) and adds
# what it finds in build-fuzz/; a crash leaves its input in build-fuzz/ and fails the script.
#   scripts/fuzz.sh [--seconds N] [target...]     (default: 30 s each, every target)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=30
targets=()
while [ $# -gt 0 ]; do
  case $1 in
    --seconds) seconds=$2; shift 2 ;;
    -h|--help) sed -n 2,7p "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=(wire transitions config matching paths providers gateway)
command -v clang++ >/dev/null || { echo "fuzz: clang++ is needed (apt-get install clang)" >&2; exit 1; }
mkdir -p build-fuzz
flags=(-std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I. -DMSGPACK_NO_BOOST)
sources_of() {
  case $1 in
    wire) echo "runtime/wire.cpp runtime/ids.cpp runtime/result.cpp" ;;
    transitions) echo "runtime/run_store.cpp runtime/wire.cpp runtime/ids.cpp runtime/result.cpp" ;;
    config) echo "runtime/config.cpp runtime/ids.cpp runtime/result.cpp" ;;
    matching) echo "sandbox/matching.cpp runtime/result.cpp" ;;
    paths) echo "sandbox/workspace.cpp runtime/result.cpp" ;;
    gateway) echo "gateway/request.cpp runtime/wire.cpp runtime/ids.cpp runtime/result.cpp" ;;
    providers) echo "llm/network_provider.cpp llm/conversation.cpp llm/http_client.cpp runtime/log.cpp runtime/wire.cpp runtime/ids.cpp runtime/result.cpp" ;;
    *) echo "fuzz: no target $1 (wire, transitions, config, matching, paths, providers, gateway)" >&2; exit 2 ;;
  esac
}
libs_of() {
  case $1 in
    transitions) echo "-lrocksdb" ;;
    # toml++ as keel-node links it (Debian's compiled library, not the header-only parser, whose
    # assertions abort on some malformed headers such as "[$x]").
    config) echo "-DTOML_HEADER_ONLY=0 -ltomlplusplus" ;;
    matching) echo "-lre2" ;;
    providers) echo "-lcurl -lspdlog -lfmt" ;;
    *) echo "" ;;
  esac
}
for t in "${targets[@]}"; do
  binary=build-fuzz/${t}_fuzz
  # shellcheck disable=SC2046
  if [ ! -x "$binary" ] || [ -n "$(find tests/fuzz/${t}_fuzz.cpp $(sources_of "$t") runtime/*.hpp sandbox/*.hpp gateway/*.hpp -newer "$binary" 2>/dev/null)" ]; then
    echo "fuzz: building $t"
    # shellcheck disable=SC2046
    clang++ "${flags[@]}" "tests/fuzz/${t}_fuzz.cpp" $(sources_of "$t") -o "$binary" $(libs_of "$t")
  fi
  corpus=tests/fuzz/corpus/$t
  found=build-fuzz/corpus-$t
  mkdir -p "$corpus" "$found"
  echo "fuzz: $t for ${seconds} s"
  (cd build-fuzz && "./${t}_fuzz" -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1 \
     "../$found" "../$corpus" 2>&1 | grep -E "^#[0-9]+.*DONE|stat::number_of_executed_units|stat::peak_rss|ERROR|SUMMARY|crash-|Test unit written" || true)
  if [ -n "$(find build-fuzz -maxdepth 1 \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) -print -quit)" ]; then
    echo "fuzz: $t found a failing input (build-fuzz/crash-* etc.)" >&2
    exit 1
  fi
done
echo "fuzz: nothing found"
