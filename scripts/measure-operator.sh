#!/usr/bin/env bash
# What one running operator costs over N governed containers, on a machine that is otherwise
# quiet: its CPU time (utime + stime, % of one core), VmRSS (average, maximum, and the
# anonymous / file-backed split) and its sampling pass, over a window after a warm-up.
#
#   scripts/measure-operator.sh [N=1000] [WARM_S=60] [WINDOW_S=60] [BINARY=target/release/hemostat]
#
# Creates N busybox sleepers (FROM scratch, label hsx=1, 8 at a time) unless that many are
# there already, runs `hemostat run --sample-interval 5s` over them with the original system's
# default policy, and leaves the containers for the next run (`KEEP=0` removes them, 16 at a
# time: one `docker rm` of 1000 ids hung Docker 20.10 here). Needs busybox-static and curl.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000}; warm=${2:-60}; window=${3:-60}; bin=${4:-target/release/hemostat}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if ! docker image inspect hs-measure:busybox >/dev/null 2>&1; then
  mkdir "$work/image"; cp "$(readlink -f "$(command -v busybox)")" "$work/image/busybox"
  printf 'FROM scratch\nCOPY busybox /bin/busybox\nENTRYPOINT ["/bin/busybox"]\n' > "$work/image/Dockerfile"
  docker build -q -t hs-measure:busybox "$work/image" >/dev/null
fi
have=$(docker ps -q --filter label=hsx=1 | wc -l)
if [ "$have" -lt "$n" ]; then
  seq "$((have + 1))" "$n" | xargs -P 8 -I{} docker run -d --label hsx=1 --name "hsx-$$-{}" hs-measure:busybox sleep 1000000 >/dev/null
fi
mkdir "$work/policies"
cat > "$work/policies/scale.yaml" <<'YAML'
apiVersion: hemostat.io/v1alpha1
kind: HealthPolicy
metadata:
  name: scale
spec:
  selector:
    matchLabels: {hsx: "1"}
  probes:
    exit: {nonZeroOnly: true}
    healthcheck: {unhealthyFor: 0s}
    oomKilled: {}
    restartLoop: {restarts: 5, within: 10m}
    cpu: {abovePercent: 85, for: 2m}
    memory: {abovePercent: 80, for: 1m}
  remediation:
    actions: [restart]
    stopTimeout: 10s
    cooldown: 1h
    maxActions: {count: 3, per: 1h}
    circuitBreaker: {failures: 3, within: 1h, openFor: 1h}
YAML
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" run --policies "$work/policies" --label-filter hsx=1 --state-dir "$work/state" \
  --listen "127.0.0.1:$port" --sample-interval 5s --log-level warn > "$work/operator.log" 2>&1 &
pid=$!
pass() { curl -s "127.0.0.1:$port/metrics" | awk '/^hemostat_sample_pass_duration_seconds_(sum|count)/{printf "%s ", $2}'; }
sleep "$warm"
read -r s0 c0 <<< "$(pass)"
t0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
sum=0; max=0
for _ in $(seq 1 "$window"); do
  r=$(awk '/^VmRSS/{print $2}' "/proc/$pid/status"); sum=$((sum + r)); [ "$r" -gt "$max" ] && max=$r
  sleep 1
done
t1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
read -r s1 c1 <<< "$(pass)"
observed=$(curl -s "127.0.0.1:$port/metrics" | awk '/^hemostat_containers_observed/{print $2}')
status=$(grep -E '^(RssAnon|RssFile|VmHWM|Threads)' "/proc/$pid/status" | tr -s ' \t' ' ' | tr '\n' ' ')
kill "$pid"; wait "$pid" 2>/dev/null || true
python3 - "$n" "$observed" "$t0" "$t1" "$(getconf CLK_TCK)" "$window" "$sum" "$max" "$s0" "$c0" "$s1" "$c1" "$status" <<'PY'
import sys
n, observed, t0, t1, tck, window, total, peak, s0, c0, s1, c1, status = sys.argv[1:]
cpu = (float(t1) - float(t0)) / float(tck) / float(window) * 100
passes = float(c1) - float(c0)
pass_ms = (float(s1) - float(s0)) / passes * 1000 if passes else float("nan")
print(f"containers {n} (observed {observed}): CPU {cpu:.2f} % of a core, RSS avg {int(total)/int(window)/1024:.1f} MiB, "
      f"max {int(peak)/1024:.1f} MiB, sampling pass {pass_ms:.1f} ms ({passes:.0f} passes); at the end: {status}")
PY
if [ "${KEEP:-1}" = 0 ]; then
  docker ps -aq --filter label=hsx=1 | xargs -r -n 16 docker rm -f >/dev/null
fi
