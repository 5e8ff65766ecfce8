#!/usr/bin/env bash
# Installs what the test suite needs and the machine lacks, from Debian's
# packages (run as root on a fresh machine). Go is expected at /usr/local/go
# or on PATH. Idempotent: installs nothing when everything is there.
set -euo pipefail
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }
need=()
have node || need+=(nodejs)
have nginx || need+=(nginx)
have redis-server || need+=(redis-server)
have chromium || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${need[@]}"
fi
