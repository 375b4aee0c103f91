#!/usr/bin/env bash
# Cross-implementation check of the OPSF frame format: frames written by
# frametool (this crate) are read by tools/opsf.py (written from
# docs/FRAME.md alone), and the other way round, for every data type and both
# codecs; the records must agree as JSON values.
# Usage: tools/interop.sh PATH/TO/frametool
# The Python is $PYTHON (default python3); it needs the `cryptography`
# package for tools/opsf_seal.py (.ci/run makes a virtual environment).
set -euo pipefail
cd "$(dirname "$0")/.."
frametool=$1
python=${PYTHON:-python3}
py=tools/opsf.py
tenant=0f8fad5b-d9cb-469f-a165-70867728950e
batch=0191a0d0-3a5b-7c8d-9e0f-112233445566
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Compares two `decode` outputs as JSON values (key order and number
# spelling aside); body_len may differ across DEFLATE writers.
same() {
    "$python" - "$1" "$2" <<'PY'
import json, sys
def load(p):
    out = []
    for line in open(p, encoding="utf-8"):
        v = json.loads(line)
        v["header"].pop("body_len")
        out.append(v)
    return out
a, b = load(sys.argv[1]), load(sys.argv[2])
if a != b:
    sys.exit(f"mismatch:\n{a}\n{b}")
PY
}

"$python" "$py" selftest
checked=0
# The records a `decode` output holds are the JSON Lines given (as values).
records_are() {
    "$python" - "$1" "$2" <<'PY'
import json, sys
got = [r for line in open(sys.argv[1], encoding="utf-8") for r in json.loads(line)["records"]]
want = [json.loads(line) for line in open(sys.argv[2], encoding="utf-8")]
if got != want:
    sys.exit(f"records differ:\n{got}\n{want}")
PY
}

for golden in tests/data/records/*.json tests/data/records/full/*.json; do
    type=$(basename "$golden" .json)
    # One golden record of the type (the full ones set every optional
    # field), plus an edited copy, as JSON Lines.
    "$python" - "$golden" > "$tmp/in.jsonl" <<'PY'
import json, sys
r = json.load(open(sys.argv[1], encoding="utf-8"))
print(json.dumps(r, separators=(",", ":"), ensure_ascii=False))
print(json.dumps(r, separators=(",", ":"), ensure_ascii=True))
PY
    for codec in deflate none; do
        args=(--tenant "$tenant" --data-type "$type" --codec "$codec" --batch-id "$batch" --created-ms 1795437296789)
        "$frametool" encode "${args[@]}" < "$tmp/in.jsonl" > "$tmp/rust.opsf"
        "$python" "$py" encode "${args[@]}" < "$tmp/in.jsonl" > "$tmp/py.opsf"
        # Each tool reads the other's frame, and its own.
        "$python" "$py" decode --expect-tenant "$tenant" < "$tmp/rust.opsf" > "$tmp/rust-by-py.json"
        "$frametool" decode --expect-tenant "$tenant" < "$tmp/py.opsf" > "$tmp/py-by-rust.json"
        "$frametool" decode < "$tmp/rust.opsf" > "$tmp/rust-by-rust.json"
        "$python" "$py" decode < "$tmp/py.opsf" > "$tmp/py-by-py.json"
        same "$tmp/rust-by-py.json" "$tmp/rust-by-rust.json"
        same "$tmp/py-by-rust.json" "$tmp/py-by-py.json"
        same "$tmp/rust-by-rust.json" "$tmp/py-by-rust.json"
        # And opsf.py reads back exactly the records framed, every field.
        records_are "$tmp/rust-by-py.json" "$tmp/in.jsonl"
        records_are "$tmp/py-by-py.json" "$tmp/in.jsonl"
        checked=$((checked + 1))
    done
done

# The committed vectors, concatenated, read by both.
cat tests/data/frames/*.opsf > "$tmp/all.opsf"
"$python" "$py" decode < "$tmp/all.opsf" > "$tmp/all-py.json"
"$frametool" decode < "$tmp/all.opsf" > "$tmp/all-rust.json"
same "$tmp/all-py.json" "$tmp/all-rust.json"

# Both refuse the same damaged input with status 2.
head -c 100 "$tmp/all.opsf" > "$tmp/cut.opsf"
for tool in "$python $py" "$frametool"; do
    status=0
    $tool decode < "$tmp/cut.opsf" > /dev/null 2>&1 || status=$?
    [ "$status" = 2 ] || { echo "interop: $tool exited $status on truncated input, expected 2"; exit 1; }
done
# An error message stays on one line even when it quotes a record key
# with a newline in it.
"$python" - "$py" > "$tmp/newline.opsf" <<'PY'
import importlib.util, sys
spec = importlib.util.spec_from_file_location("opsf", sys.argv[1])
opsf = importlib.util.module_from_spec(spec)
spec.loader.exec_module(opsf)
payload = b'{"ObjectName\\nX":1}\n'
sys.stdout.buffer.write(opsf._raw(payload, payload, codec=0))
PY
status=0
"$frametool" decode < "$tmp/newline.opsf" > /dev/null 2> "$tmp/newline.err" || status=$?
[ "$status" = 2 ] || { echo "interop: frametool exited $status on a bad record key, expected 2"; exit 1; }
[ "$(wc -l < "$tmp/newline.err")" = 1 ] || { echo "interop: frametool's error is not one line:"; cat "$tmp/newline.err"; exit 1; }
checked=$((checked + 1))

# Sealed frames (docs/FRAME.md, "Sealed frames"): tools/opsf_seal.py, written
# from the document with Python's cryptography package, against frametool.
seal_py="$(dirname "$0")/opsf_seal.py"
k1=000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
k2=c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf
sealed_dir="$(dirname "$0")/../tests/data/frames/sealed"
# The committed sealed vectors open, in Python, to their unsealed frames.
for pair in "performance-3-deflate.k1:performance-3-deflate:1:$k1" \
            "performance-none.k1:performance-none:1:$k1" \
            "empty.k1:empty:1:$k1" \
            "performance-3-deflate.k2:performance-3-deflate:2:$k2"; do
    IFS=: read -r sealed plain id key <<< "$pair"
    "$python" "$seal_py" open --kek-id "$id" --kek-hex "$key" < "$sealed_dir/$sealed.opsf" > "$tmp/opened.opsf"
    cmp -s "$tmp/opened.opsf" "$sealed_dir/../$plain.opsf" \
        || { echo "interop: $sealed.opsf does not open to $plain.opsf in Python"; exit 1; }
    checked=$((checked + 1))
done
for f in tests/data/frames/*.opsf; do
    # frametool seals, Python opens; Python seals, frametool opens.
    "$frametool" seal --kek-id 7 --kek-hex "$k1" < "$f" > "$tmp/rs.opsf"
    "$python" "$seal_py" open --kek-id 7 --kek-hex "$k1" < "$tmp/rs.opsf" > "$tmp/rs-py.opsf"
    cmp -s "$tmp/rs-py.opsf" "$f" || { echo "interop: $f sealed by frametool does not open in Python"; exit 1; }
    "$python" "$seal_py" seal --kek-id 7 --kek-hex "$k1" < "$f" > "$tmp/py.opsf"
    "$frametool" open --kek-id 7 --kek-hex "$k1" < "$tmp/py.opsf" > "$tmp/py-rs.opsf"
    cmp -s "$tmp/py-rs.opsf" "$f" || { echo "interop: $f sealed by Python does not open in frametool"; exit 1; }
    # Rewrapped by one, opened by the other; the body stays byte-identical.
    "$frametool" rewrap --from-kek-id 7 --from-kek-hex "$k1" --to-kek-id 9 --to-kek-hex "$k2" < "$tmp/py.opsf" > "$tmp/py-rw.opsf"
    cmp -s <(tail -c +137 "$tmp/py.opsf") <(tail -c +137 "$tmp/py-rw.opsf") \
        || { echo "interop: frametool rewrap changed the body of $f"; exit 1; }
    "$python" "$seal_py" open --kek-id 9 --kek-hex "$k2" < "$tmp/py-rw.opsf" | cmp -s - "$f" \
        || { echo "interop: $f rewrapped by frametool does not open in Python"; exit 1; }
    "$python" "$seal_py" rewrap --from-kek-id 7 --from-kek-hex "$k1" --to-kek-id 9 --to-kek-hex "$k2" < "$tmp/rs.opsf" > "$tmp/rs-rw.opsf"
    "$frametool" open --kek-id 9 --kek-hex "$k2" < "$tmp/rs-rw.opsf" | cmp -s - "$f" \
        || { echo "interop: $f rewrapped by Python does not open in frametool"; exit 1; }
    # The wrong key is refused by both, with status 2.
    for tool in "$python $seal_py" "$frametool"; do
        status=0
        $tool open --kek-id 7 --kek-hex "$k2" < "$tmp/rs.opsf" > /dev/null 2>&1 || status=$?
        [ "$status" = 2 ] || { echo "interop: $tool opened $f under the wrong key (status $status)"; exit 1; }
    done
    checked=$((checked + 1))
done
# A key that is not 64 hex digits (a sign, a space) is a usage error (64).
for bad in "+$(printf '0%.0s' $(seq 63))" " $(printf '0%.0s' $(seq 63))"; do
    status=0
    "$frametool" open --kek-id 7 --kek-hex "$bad" < "$tmp/rs.opsf" > /dev/null 2>&1 || status=$?
    [ "$status" = 64 ] || { echo "interop: frametool took --kek-hex '$bad' (status $status)"; exit 1; }
done
checked=$((checked + 1))

echo "interop: $checked passed, 0 failed"
