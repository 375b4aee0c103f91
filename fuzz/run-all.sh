#!/usr/bin/env bash
# Runs every fuzz target in turn, SECONDS each, on the nightly toolchain,
# and prints how many executions each made.
#
# Usage: fuzz/run-all.sh SECONDS [TARGET...]
#
# Needs `cargo install cargo-fuzz` and a nightly toolchain (`rustup
# toolchain install nightly`). Each target starts from, and adds what it
# finds to, fuzz/corpus/<target> (or $CORPUS_ROOT/<target>: point it at a
# copy to leave the committed corpora alone). Add what a grown copy found
# to the committed corpus with `fuzz/minimize.sh <target> <copy>` (the
# fewest inputs that reach every new edge). A crash stops
# its target with the reproducer in fuzz/artifacts/<target>/; copy it to
# fuzz/regressions/<target>/ with the fix, so that
# `cargo test -p opsdata --features fuzzing --test fuzz_corpus` (or
# `-p opsdata-io`, for its targets) replays it.
#
# Targets named in $NO_SANITIZER (default: outbox_ops spool_recovery
# http_request) are built and run with `--sanitizer none`, after the others
# (switching rebuilds): the crates are `#![forbid(unsafe_code)]`, so
# AddressSanitizer only watches their dependencies, and it costs
# outbox_ops (allocation-heavy) about 3.8x, 1 205 executions/s with it and
# 4 587 without, spool_recovery (file-heavy) 7x, 322 against 2 362, and
# http_request (the whole service per request) 16x, 392 against 6 100
# (README, Fuzzing). The summary says which ran without.
set -euo pipefail
cd "$(dirname "$0")"

if [ $# -lt 1 ] || ! [[ $1 =~ ^[0-9]+$ ]]; then
    echo "usage: $0 SECONDS [TARGET...]" >&2
    exit 2
fi
seconds=$1
shift
if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
corpus_root=${CORPUS_ROOT:-corpus}
read -r -a no_sanitizer <<< "${NO_SANITIZER-outbox_ops spool_recovery http_request}"
# The sanitized targets first, then the others: one switch, one rebuild.
plain=()
ordered=()
for t in "${targets[@]}"; do
    if [[ " ${no_sanitizer[*]} " == *" $t "* ]]; then
        plain+=("$t")
    else
        ordered+=("$t")
    fi
done
targets=("${ordered[@]}" "${plain[@]}")
commit=$(git rev-parse --short HEAD 2> /dev/null || echo unknown)
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

summary=()
status=0
for t in "${targets[@]}"; do
    mkdir -p "$corpus_root/$t"
    sanitizer=()
    note=""
    if [[ " ${plain[*]} " == *" $t "* ]]; then
        sanitizer=(--sanitizer none)
        note=" (no sanitizer)"
    fi
    echo "== $t${note}: ${seconds}s from $corpus_root/$t"
    rc=0
    cargo +nightly fuzz run "${sanitizer[@]}" "$t" "$corpus_root/$t" -- \
        -max_total_time="$seconds" -print_final_stats=1 > "$logs/$t.log" 2>&1 || rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$logs/$t.log" | tail -1)
    files=$(find "$corpus_root/$t" -type f | wc -l)
    if [ "$rc" -ne 0 ]; then
        status=1
        tail -n 40 "$logs/$t.log"
        summary+=("$t${note}: FAILED (exit $rc) after ${runs:-?} executions; see fuzz/artifacts/$t/")
    else
        summary+=("$t${note}: ${runs:-?} executions, ${rate:-?}/s, corpus $files files")
    fi
done

echo
echo "== fuzz/run-all.sh $seconds on commit $commit"
printf '%s\n' "${summary[@]}"
exit "$status"
