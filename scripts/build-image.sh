#!/usr/bin/env bash
# Builds the HemoStat operator image offline: scripts/build-image.sh [TAG] (default hemostat:dev).
# A static binary (glibc, crt-static: musl does not build here) and Debian's CA roots, FROM
# scratch (deploy/Dockerfile). Checks that the image runs `--version` and is under 30 MiB.
# CARGO_TARGET_DIR is honoured; the binary is rebuilt only when the sources changed.
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-hemostat:dev}
target=x86_64-unknown-linux-gnu
max_bytes=$((30 * 1024 * 1024))
started=$(date +%s)

if [ ! -s /etc/ssl/certs/ca-certificates.crt ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "build-image: installing ca-certificates"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq ca-certificates >/dev/null
fi

echo "build-image: static release binary ($target)"
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  nice cargo build --locked --release --quiet --target "$target" --bin hemostat
bin="${CARGO_TARGET_DIR:-target}/$target/release/hemostat"

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$bin" "$ctx/hemostat"
strip "$ctx/hemostat" 2>/dev/null || echo "build-image: strip not found (binutils): the image is larger"
if ! file -L "$ctx/hemostat" | grep -q "static"; then
  echo "build-image: $bin is dynamically linked; a scratch image needs a static binary" >&2
  exit 1
fi
cp /etc/ssl/certs/ca-certificates.crt "$ctx/"
cp deploy/Dockerfile "$ctx/"

echo "build-image: docker build $tag"
# The legacy builder needs no buildx plugin (absent here); BuildKit works as well.
DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0} docker build -q -t "$tag" "$ctx" >/dev/null

size=$(docker image inspect --format '{{.Size}}' "$tag")
if [ "$size" -ge "$max_bytes" ]; then
  echo "build-image: $tag is $size bytes, over the 30 MiB limit" >&2
  exit 1
fi
version=$(docker run --rm --label hemostat.test=1 "$tag" --version)
echo "build-image: $tag ($version, $((size / 1024)) KiB) in $(($(date +%s) - started))s"
