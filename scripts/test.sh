#!/usr/bin/env bash
# Runs HemoStat's whole test suite: unit tests, policy corpus, and the end-to-end tests on the
# real Docker engine. Installs what the tests need first (Debian/Ubuntu, as root or via sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v busybox >/dev/null && file -L "$(command -v busybox)" 2>/dev/null | grep -q static || need_apt+=(busybox-static)
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v file >/dev/null || need_apt+=(file)
command -v prometheus-alertmanager >/dev/null || need_apt+=(prometheus-alertmanager)
command -v python3 >/dev/null || need_apt+=(python3)
if ((${#need_apt[@]})); then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "test.sh: installing ${need_apt[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
command -v check-jsonschema >/dev/null || python3 -m pip install -q check-jsonschema

if ! docker info >/dev/null 2>&1; then
  echo "test.sh: the Docker engine does not answer (docker info failed); the end-to-end tests need it" >&2
  exit 1
fi

.ci/check-schema.sh
cargo test --locked --lib --bins --tests
