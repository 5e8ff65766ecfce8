#!/usr/bin/env bash
# The whole test suite, as the README gives it. Installs what the tests need
# and is missing (nginx, redis-server, node, chromium: Debian packages, so
# run as root on a fresh machine), then runs every package under -race with
# a deadline.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"
bash scripts/install-test-deps.sh
go test -race -count=1 -timeout 25m ./...
