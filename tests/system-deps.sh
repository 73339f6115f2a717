#!/usr/bin/env bash
# Debian packages the test suite starts for real: promtool (from prometheus),
# redis-server and PostgreSQL on free loopback ports; chromium (headless) for
# the dashboard's browser test; nginx for the packaging's example in front of
# a Unix socket; wrk and h2load (nghttp2-client) for the benches; a C compiler
# and Python's headers for the compiled build's tests (make test-compiled).
# Installs only what is missing, so a second run costs nothing.
set -euo pipefail
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if [ "${1:-}" = venv ]; then
  want=(python3-venv)
else
  want=()
  command -v promtool >/dev/null || want+=(prometheus)
  command -v redis-server >/dev/null || want+=(redis-server)
  ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || want+=(postgresql)
  command -v wrk >/dev/null || want+=(wrk)
  command -v chromium >/dev/null || want+=(chromium)
  command -v nginx >/dev/null || want+=(nginx-light)
  command -v h2load >/dev/null || want+=(nghttp2-client)
  command -v gcc >/dev/null || want+=(gcc)
  python3 -c 'import os, sysconfig; raise SystemExit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
    || want+=(python3-dev)
fi
[ ${#want[@]} -eq 0 ] && exit 0
echo "installing ${want[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
