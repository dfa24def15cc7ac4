#!/usr/bin/env bash
# Installs the Debian 12 packages keel needs (only those missing: a second run installs nothing)
# and builds keel into build/. Usage: scripts/setup.sh [--no-build]
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake ninja-build pkg-config git
  libcaf-dev libnats-dev nats-server libmsgpack-cxx-dev librocksdb-dev
  libboost-dev
  libspdlog-dev libfmt-dev libcli11-dev libtomlplusplus-dev nlohmann-json3-dev
  libcurl4-openssl-dev libssl-dev libcpp-httplib-dev catch2 bubblewrap curl
  libre2-dev libseccomp-dev
  # the sandbox tests probe sockets and metadata with them
  python3 procps util-linux e2fsprogs
  # the metrics tests: promtool checks /metrics, a real Prometheus scrapes a cluster
  prometheus
  # scripts/fuzz.sh: clang with libFuzzer and its sanitizers
  clang libclang-rt-14-dev
)

# The guide's demo program is JavaScript, and the dashboard's browser tests run on node: bring
# node and npm only when none is on PATH. The browser tests drive Debian's chromium.
command -v node >/dev/null 2>&1 || packages+=(nodejs)
command -v npm >/dev/null 2>&1 || packages+=(npm)
packages+=(chromium)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -q
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "setup: every package is installed"
fi

# Commands that agents run take the uid and gid of an account of their own, never the node's
# (docs/SANDBOX.md): a system account with no home, no shell and no password.
if ! getent passwd keel-sandbox >/dev/null 2>&1; then
  echo "setup: making the keel-sandbox account that commands run as"
  sudo_cmd=()
  [ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
  "${sudo_cmd[@]}" useradd --system --user-group --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin keel-sandbox
fi

# playwright-core (pinned in tests/browser/package-lock.json) drives that chromium; it downloads
# no browser of its own.
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  echo "setup: installing playwright-core for the browser tests"
  (cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
fi

# The reference MCP servers (pinned in tests/mcp/package-lock.json): the MCP tests and the mcp
# example run them.
if [ ! -d tests/mcp/node_modules/@modelcontextprotocol/server-filesystem ]; then
  echo "setup: installing the reference MCP servers"
  (cd tests/mcp && npm ci --no-audit --no-fund --loglevel=error)
fi

# The TypeScript SDK (sdk/typescript): its packages (pinned in its package-lock.json) and its
# build (dist/), made again when a source is newer. The examples and the SDK's tests use it.
if [ ! -d sdk/typescript/node_modules/@nats-io/jetstream ]; then
  echo "setup: installing the TypeScript SDK's packages"
  (cd sdk/typescript && npm ci --no-audit --no-fund --loglevel=error)
fi
if [ ! -f sdk/typescript/dist/index.js ] || [ -n "$(find sdk/typescript/src -newer sdk/typescript/dist/index.js)" ]; then
  echo "setup: building the TypeScript SDK"
  (cd sdk/typescript && npm run --silent build)
fi

if [ "${1:-}" != "--no-build" ]; then
  # CI builds with warnings as errors; elsewhere the build keeps what it was configured with
  # (OFF at first), so that running this again never rebuilds everything.
  werror=()
  [ "${CI:-}" = "true" ] && werror=(-DKEEL_WERROR=ON)
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "${werror[@]}" >/dev/null
  ninja -C build
fi
