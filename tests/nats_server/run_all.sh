#!/bin/sh
# Each scenario twice, 3 minutes each (SECS), one at a time: about 27 minutes.
#   cd tests/nats_server && npm ci && ./run_all.sh
cd "$(dirname "$0")"
for spec in kill:11 kill:12 stop:21 stop:22 leaderkill:31 leaderkill:32 leaderstop:41 leaderstop:42; do
  sc=${spec%%:*}; sd=${spec##*:}
  timeout 600 node jetstream_faults.mjs "$sc" "$sd" "${SECS:-180}" > "out-$sc-$sd.txt" 2>&1
  echo "$sc $sd exit $?"
done
