#!/usr/bin/env bash
# Runs one cargo-fuzz target for a while (not part of the tests or CI; docs/FUZZING.md).
#   scripts/fuzz.sh TARGET [SECONDS=600] [extra libFuzzer flags...]
# TARGET: policy_load | redis_policy | external_request | ai_answer.
# New inputs go to fuzz/corpus/TARGET (ignored by git); the committed seeds are read from
# fuzz/seeds/TARGET; a crash is written to fuzz/artifacts/TARGET/.
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
target=${1:?usage: scripts/fuzz.sh TARGET [SECONDS] [libFuzzer flags...]}
seconds=${2:-600}
shift $(($# < 2 ? $# : 2))
dict=()
case $target in
  policy_load | redis_policy) dict=(-dict=policy.dict) ;;
esac
mkdir -p "corpus/$target"
exec cargo +nightly fuzz run "$target" "corpus/$target" "seeds/$target" -- \
  -max_total_time="$seconds" -max_len=16384 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
  "${dict[@]}" "$@"
