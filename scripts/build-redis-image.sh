#!/usr/bin/env bash
# Builds a Redis image offline, for tests and registry-less hosts: FROM scratch + Debian's
# redis-server and redis-cli + the shared libraries `ldd` lists for them.
#   scripts/build-redis-image.sh [TAG]     default hemostat-redis:<content hash>
# Prints the tag on stdout (last line); rebuilds only when the binaries changed. Use it as
# REDIS_IMAGE for deploy/docker-compose.yml. Installs redis-server (apt) when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "build-redis-image: installing redis-server" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null
fi
server=$(readlink -f "$(command -v redis-server)")
cli=$(readlink -f "$(command -v redis-cli)")
# Every library either binary needs, and the dynamic loader (absolute paths, symlinks resolved
# into the same name the loader asks for).
libs=$(ldd "$server" "$cli" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// && $2 ~ /^\(/ {print $1}' | sort -u)

dockerfile='FROM scratch
COPY rootfs/ /
ENV PATH=/usr/bin
WORKDIR /data
LABEL hemostat.test="1" org.opencontainers.image.title="redis (Debian, from scratch)"
EXPOSE 6379
CMD ["redis-server", "--protected-mode", "no"]
'
hash=$( { printf '%s' "$dockerfile"; for f in "$server" "$cli" $libs; do readlink -f "$f"; done | xargs sha256sum; } | sha256sum | cut -c1-16)
tag=${1:-hemostat-redis:$hash}

if ! docker image inspect "$tag" >/dev/null 2>&1; then
  ctx=$(mktemp -d)
  trap 'rm -rf "$ctx"' EXIT
  mkdir -p "$ctx/rootfs/usr/bin"
  cp "$server" "$ctx/rootfs/usr/bin/redis-server"
  cp "$cli" "$ctx/rootfs/usr/bin/redis-cli"
  for lib in $libs; do
    mkdir -p "$ctx/rootfs$(dirname "$lib")"
    cp -L "$lib" "$ctx/rootfs$lib"
  done
  printf '%s' "$dockerfile" > "$ctx/Dockerfile"
  DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0} docker build -q -t "$tag" "$ctx" >/dev/null
  docker run --rm --label hemostat.test=1 "$tag" redis-server --version >&2
fi
echo "$tag"
