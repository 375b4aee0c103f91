#!/usr/bin/env bash
# Adds to a committed corpus, fuzz/corpus/<TARGET>, the fewest inputs from
# grown corpora (DIR...) that reach every coverage edge they reach beyond
# it: libFuzzer's set-cover merge over edges (`-set_cover_merge=1
# -use_counters=0`; hit counts are left out, which keeps the corpus a few
# times smaller than `cargo fuzz cmin` would). The committed files stay:
# the generated, named seeds (some are checked by the replay tests) and
# earlier finds.
#
# Usage: fuzz/minimize.sh TARGET DIR...
#
# Builds TARGET on the nightly toolchain first (`--sanitizer none` if it is
# named in $NO_SANITIZER, as in run-all.sh; coverage is the same either
# way). Prints how many inputs were added.
set -euo pipefail
cd "$(dirname "$0")"

if [ $# -lt 2 ]; then
    echo "usage: $0 TARGET DIR..." >&2
    exit 2
fi
target=$1
shift
dirs=()
for d in "$@"; do
    dirs+=("$(cd "$d" && pwd)")
done
read -r -a no_sanitizer <<< "${NO_SANITIZER-outbox_ops spool_recovery http_request}"
sanitizer=()
if [[ " ${no_sanitizer[*]} " == *" $target "* ]]; then
    sanitizer=(--sanitizer none)
fi
cargo +nightly fuzz build "${sanitizer[@]}" "$target"
host=$(rustc +nightly -vV | sed -n 's/^host: //p')
before=$(find "corpus/$target" -type f | wc -l)
"target/$host/release/$target" -set_cover_merge=1 -use_counters=0 \
    "corpus/$target" "${dirs[@]}" 2>&1 | grep '^MERGE-OUTER: [0-9]* new files' || true
after=$(find "corpus/$target" -type f | wc -l)
echo "$target: $before -> $after inputs ($(du -sh "corpus/$target" | cut -f1))"
