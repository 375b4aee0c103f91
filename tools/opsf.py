#!/usr/bin/env python3
"""opsf.py: an independent OPSF v1 frame encoder/decoder.

Written from docs/FRAME.md and docs/RECORDS.md only, to cross-check the Rust
implementation (frametool). Standard library only.

Subcommands:
  encode   JSON Lines on stdin -> one unsealed frame on stdout
  decode   concatenated frames on stdin -> one JSON object per frame
  selftest round trips and error cases built in-process
"""

import argparse
import json
import struct
import sys
import uuid
import zlib

MAGIC = b"\x89OPS"
VERSION = 1
SCHEMA_VERSION = 1
FLAG_SEALED = 0x01
HEADER_LEN = 64
SEAL_LEN = 68
CODECS = {0: "none", 1: "deflate"}
CODEC_IDS = {v: k for k, v in CODECS.items()}
DATA_TYPES = {
    1: "Alert",
    2: "Configuration",
    3: "Event",
    4: "Metadata",
    5: "Performance",
    6: "State",
}
DATA_TYPE_IDS = {v.lower(): k for k, v in DATA_TYPES.items()}

# Default reader limits (docs/FRAME.md, step 6 and step 10).
BODY_LIMIT = 4 * 1024 * 1024
CONTENT_LIMIT = 64 * 1024 * 1024
RECORD_LIMIT = 65536
RECORD_SIZE_LIMIT = 256 * 1024
MAX_DEPTH = 127  # containers, the record object included (serde_json's limit)

# Header layout after the magic (offset 4 .. 64).
HEADER_STRUCT = struct.Struct(">BBBBHHI16s16sqII")
assert HEADER_STRUCT.size == HEADER_LEN - 4


def _days_from_civil(y, m, d):
    """Days since 1970-01-01 of a proleptic Gregorian date (astronomical year)."""
    y -= 1 if m <= 2 else 0
    era = y // 400
    yoe = y - era * 400
    mp = (m + 9) % 12
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


DAY_MS = 86_400_000
# "created_ms within the years -262 143 to 262 142" (read as inclusive, UTC,
# astronomical year numbering): from -262143-01-01T00:00:00.000Z up to
# 262142-12-31T23:59:59.999Z.
CREATED_MIN = _days_from_civil(-262143, 1, 1) * DAY_MS
CREATED_MAX = _days_from_civil(262143, 1, 1) * DAY_MS - 1
I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1
U32_MAX = (1 << 32) - 1


def crc32(data):
    return zlib.crc32(data) & 0xFFFFFFFF


class FrameError(Exception):
    """A frame failed the check named `check` (a name from docs/FRAME.md)."""

    def __init__(self, check, detail=""):
        super().__init__(check)
        self.check = check
        self.detail = detail

    def __str__(self):
        return self.check + (": " + self.detail if self.detail else "")


# ---------------------------------------------------------------- encoding


def build_payload(records):
    parts = []
    for rec in records:
        text = json.dumps(rec, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        parts.append(text.encode("utf-8") + b"\n")
    return b"".join(parts)


def deflate(data, level=6):
    c = zlib.compressobj(level, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def build_header(*, codec, data_type, record_count, tenant, batch, created_ms,
                 content_len, body_len, flags=0, version=VERSION,
                 schema_version=SCHEMA_VERSION, reserved=0, magic=MAGIC):
    return magic + HEADER_STRUCT.pack(
        version, flags, codec, data_type, schema_version, reserved,
        record_count, tenant, batch, created_ms, content_len, body_len)


def assemble(header, body, seal=b""):
    head = header + seal
    return (head + struct.pack(">I", crc32(head)) + body
            + struct.pack(">I", crc32(body)))


def encode_frame(records, *, tenant, batch, data_type, created_ms,
                 codec="deflate", level=6):
    """Encode an unsealed frame. tenant/batch are 16-byte values."""
    payload = build_payload(records)
    codec_id = CODEC_IDS[codec]
    body = deflate(payload, level) if codec_id == 1 else payload
    if len(payload) > U32_MAX or len(body) > U32_MAX or len(records) > U32_MAX:
        raise ValueError("batch too large for a frame")
    header = build_header(codec=codec_id, data_type=data_type,
                          record_count=len(records), tenant=tenant, batch=batch,
                          created_ms=created_ms, content_len=len(payload),
                          body_len=len(body))
    return assemble(header, body)


# ---------------------------------------------------------------- decoding


def _reject_constant(name):
    raise ValueError("non-JSON constant " + name)


def _pairs_no_dups(pairs):
    obj = {}
    for k, v in pairs:
        if k in obj:
            raise ValueError("duplicate key " + repr(k))
        obj[k] = v
    return obj


def _parse_float(text):
    v = float(text)
    if v != v or v in (float("inf"), float("-inf")):
        raise ValueError("number out of f64 range: " + text)
    return v


def _depth_ok(text):
    """Nesting depth of a JSON text (outside strings) is at most MAX_DEPTH."""
    depth = 0
    in_str = False
    esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def parse_record(line):
    """Parse one JSON Lines line (bytes, no newline) as a JSON object.

    Only JSON-level checks: UTF-8, syntax, an object at the top, no duplicate
    keys, no NaN/Infinity, finite numbers, nesting at most 127 containers, no lone
    surrogates. Field-level schema validation is deliberately not done.
    """
    try:
        text = line.decode("utf-8")
        if not _depth_ok(text):
            raise ValueError("nesting deeper than %d" % MAX_DEPTH)
        obj = json.loads(text, object_pairs_hook=_pairs_no_dups,
                         parse_constant=_reject_constant,
                         parse_float=_parse_float)
        if not isinstance(obj, dict):
            raise ValueError("not a JSON object")
        # Lone surrogates (from \ud800 escapes) are not Unicode scalar values.
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError, UnicodeError) as e:
        raise FrameError("Record", str(e)) from None
    return obj


def inflate(body, content_len):
    d = zlib.decompressobj(-15)
    try:
        out = d.decompress(body, content_len + 1)
    except zlib.error as e:
        raise FrameError("Corrupt", str(e)) from None
    if len(out) > content_len:
        raise FrameError("InflateOverflow",
                         "more than content_len=%d bytes" % content_len)
    if d.eof:
        if len(out) < content_len:
            raise FrameError("InflateShort",
                             "%d of %d bytes" % (len(out), content_len))
        if d.unused_data:
            raise FrameError("TrailingData",
                             "%d bytes after the stream" % len(d.unused_data))
        return out
    # All input consumed (output stayed under max_length) but no final block.
    raise FrameError("InflateStalled", "stream cut off after %d bytes" % len(out))


def decode_records(header, body):
    """Steps 8-10. Returns the list of record objects, or None if sealed."""
    if header["flags"] & FLAG_SEALED:
        return None  # step 8 (`Sealed`): printed as records = null
    content_len = header["content_len"]
    payload = inflate(body, content_len) if header["codec"] == "deflate" else body
    if payload and not payload.endswith(b"\n"):
        raise FrameError("RecordCount", "payload does not end with \\n")
    lines = payload.split(b"\n")[:-1] if payload else []
    if len(lines) != header["record_count"]:
        raise FrameError("RecordCount", "%d lines, record_count %d"
                         % (len(lines), header["record_count"]))
    records = []
    for i, line in enumerate(lines):
        if len(line) > RECORD_SIZE_LIMIT:
            raise FrameError("RecordTooLarge", "line %d: %d bytes" % (i, len(line)))
        try:
            records.append(parse_record(line))
        except FrameError as e:
            e.detail = "line %d: %s" % (i, e.detail)
            raise
    return records


def read_frame(buf, pos, expect_tenant=None):
    """Read one frame starting at buf[pos]. Returns (json_obj, next_pos)."""
    end = len(buf)

    def need(n, what):
        if pos + n > end:
            raise FrameError("Truncated", "input ends inside the %s" % what)

    # 1. magic, byte by byte as it arrives
    for i in range(4):
        need(i + 1, "magic")
        if buf[pos + i] != MAGIC[i]:
            raise FrameError("BadMagic", "byte %d is 0x%02x" % (i, buf[pos + i]))
    # 2. version
    need(5, "header")
    if buf[pos + 4] != VERSION:
        raise FrameError("UnsupportedVersion", "version %d" % buf[pos + 4])
    # 3. header_crc (SEALED bit locates it)
    need(6, "header")
    sealed = bool(buf[pos + 5] & FLAG_SEALED)
    hlen = HEADER_LEN + (SEAL_LEN if sealed else 0)
    need(hlen + 4, "header")
    (stored,) = struct.unpack_from(">I", buf, pos + hlen)
    if crc32(buf[pos:pos + hlen]) != stored:
        raise FrameError("HeaderCrc")
    (version, flags, codec, data_type, schema_version, reserved, record_count,
     tenant, batch, created_ms, content_len, body_len) = \
        HEADER_STRUCT.unpack_from(buf, pos + 4)
    # 4. header fields
    if flags & ~FLAG_SEALED:
        raise FrameError("ReservedFlags", "flags 0x%02x" % flags)
    if codec not in CODECS:
        raise FrameError("UnknownCodec", "codec %d" % codec)
    if data_type not in DATA_TYPES:
        raise FrameError("UnknownDataType", "data_type %d" % data_type)
    if schema_version != SCHEMA_VERSION:
        raise FrameError("UnsupportedSchemaVersion", "schema_version %d" % schema_version)
    if reserved != 0:
        raise FrameError("ReservedNotZero", "reserved 0x%04x" % reserved)
    if tenant == bytes(16) or batch == bytes(16):
        raise FrameError("NilId", "tenant_id" if tenant == bytes(16) else "batch_id")
    if not CREATED_MIN <= created_ms <= CREATED_MAX:
        raise FrameError("CreatedOutOfRange", "created_ms %d" % created_ms)
    # 5. tenant
    if expect_tenant is not None and tenant != expect_tenant:
        raise FrameError("TenantMismatch", str(uuid.UUID(bytes=tenant)))
    # 6. limits
    if body_len > BODY_LIMIT + (16 if sealed else 0):  # a sealed body's tag
        raise FrameError("BodyTooLarge", "body_len %d" % body_len)
    if content_len > CONTENT_LIMIT:
        raise FrameError("ContentTooLarge", "content_len %d" % content_len)
    if record_count > RECORD_LIMIT:
        raise FrameError("TooManyRecords", "record_count %d" % record_count)
    if not sealed and codec == 0 and body_len != content_len:
        raise FrameError("LengthMismatch", "body_len %d, content_len %d"
                         % (body_len, content_len))
    # 7. body_crc
    body_at = pos + hlen + 4
    need(hlen + 4 + body_len + 4, "body")
    body = buf[body_at:body_at + body_len]
    (stored,) = struct.unpack_from(">I", buf, body_at + body_len)
    if crc32(body) != stored:
        raise FrameError("BodyCrc")
    header = {
        "magic": MAGIC.hex(),
        "version": version,
        "flags": flags,
        "codec": CODECS[codec],
        "data_type": DATA_TYPES[data_type],
        "schema_version": schema_version,
        "reserved": reserved,
        "record_count": record_count,
        "tenant_id": str(uuid.UUID(bytes=tenant)),
        "batch_id": str(uuid.UUID(bytes=batch)),
        "created_ms": created_ms,
        "content_len": content_len,
        "body_len": body_len,
    }
    # 8-10
    records = decode_records(header, body)
    return {"header": header, "records": records}, body_at + body_len + 4


def decode_stream(buf, expect_tenant=None):
    """Yield (frame_json, offset) for each frame; raises FrameError (with
    .frame_index and .offset set) at the first invalid frame."""
    pos = 0
    index = 0
    while pos < len(buf):
        try:
            frame, nxt = read_frame(buf, pos, expect_tenant)
        except FrameError as e:
            e.frame_index = index
            e.offset = pos
            raise
        yield frame, pos
        pos = nxt
        index += 1


def frame_to_line(frame):
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"


# ---------------------------------------------------------------- CLI


def fail(msg):
    sys.stdout.flush()
    sys.stderr.write("opsf: " + msg.replace("\n", " ") + "\n")
    sys.exit(2)


def parse_uuid(text, what):
    try:
        u = uuid.UUID(text)
    except ValueError:
        fail("invalid %s UUID: %r" % (what, text))
    if u.bytes == bytes(16):
        fail("%s must not be the nil UUID" % what)
    return u.bytes


def cmd_encode(args):
    tenant = parse_uuid(args.tenant, "tenant")
    batch = parse_uuid(args.batch_id, "batch id")
    dt = DATA_TYPE_IDS.get(args.data_type.lower()) if args.data_type.isascii() else None
    if dt is None:
        fail("unknown data type %r (expected one of %s)"
             % (args.data_type, ", ".join(DATA_TYPES.values())))
    if not (0 <= args.level <= 9):
        fail("level must be 0..9")
    if not (I64_MIN <= args.created_ms <= I64_MAX):
        fail("created_ms out of i64 range")
    if not (CREATED_MIN <= args.created_ms <= CREATED_MAX):
        fail("created_ms outside the years -262143..262142 (CreatedOutOfRange)")
    data = sys.stdin.buffer.read()
    records = []
    for n, line in enumerate(data.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line.decode("utf-8"), parse_constant=_reject_constant,
                             parse_float=_parse_float)
        except (ValueError, UnicodeError, RecursionError) as e:
            fail("line %d: invalid JSON: %s" % (n, e))
        if not isinstance(obj, dict):
            fail("line %d: not a JSON object" % n)
        records.append(obj)
    try:
        frame = encode_frame(records, tenant=tenant, batch=batch, data_type=dt,
                             created_ms=args.created_ms, codec=args.codec,
                             level=args.level)
    except (ValueError, UnicodeError) as e:
        fail("cannot encode: %s" % e)
    sys.stdout.buffer.write(frame)
    sys.stdout.buffer.flush()
    return 0


def cmd_decode(args):
    expect = None
    if args.expect_tenant is not None:
        try:
            expect = uuid.UUID(args.expect_tenant).bytes
        except ValueError:
            fail("invalid --expect-tenant UUID: %r" % args.expect_tenant)
    buf = sys.stdin.buffer.read()
    out = sys.stdout.buffer
    try:
        for frame, _ in decode_stream(buf, expect):
            out.write(frame_to_line(frame))
    except FrameError as e:
        out.flush()
        fail("frame %d at offset %d: %s" % (e.frame_index, e.offset, e))
    out.flush()
    return 0


# ---------------------------------------------------------------- selftest

T0 = uuid.UUID("0f8fad5b-d9cb-469f-a165-70867728950e").bytes
B0 = uuid.UUID("0191a0d0-3a5b-7c8d-9e0f-112233445566").bytes
CREATED = 1795437296789


def _perf(i):
    return {
        "ObjectName": "Processor",
        "CounterName": "% Processor Time",
        "PerfmonInstanceName": "_Total" if i else "",
        "PerformanceDataId": "0191a0d0-3a5b-7c8d-9e0f-11223344556%d" % (i % 10),
        "PerformanceSourceInternalID": i,
        "SampleValue": 12.5 + i,
        "TimeSampled": "2026-11-23T12:34:56.789Z",
        "TimeAdded": "2026-11-23T12:34:57Z",
        "Note": "line\nbreak \u00e9\u4e2d\U0001F600",
    }


def _raw(payload, body, *, codec=1, record_count=None, content_len=None,
         tenant=T0, flags=0, seal=b"", created_ms=CREATED, **kw):
    header = build_header(codec=codec, data_type=5,
                          record_count=record_count if record_count is not None else payload.count(b"\n"),
                          tenant=tenant, batch=B0, created_ms=created_ms,
                          content_len=len(payload) if content_len is None else content_len,
                          body_len=len(body), flags=flags, **kw)
    return assemble(header, body, seal)


def _recrc(frame):
    """Recompute both CRCs of an unsealed frame (after editing it)."""
    f = bytearray(frame)
    f[64:68] = struct.pack(">I", crc32(bytes(f[:64])))
    body_len = struct.unpack_from(">I", f, 60)[0]
    f[68 + body_len:72 + body_len] = struct.pack(">I", crc32(bytes(f[68:68 + body_len])))
    return bytes(f)


def selftest():
    passed = failed = 0

    def check(name, cond, info=""):
        nonlocal passed, failed
        if cond:
            passed += 1
        else:
            failed += 1
            print("FAIL %s %s" % (name, info))

    def decode_all(buf, expect=None):
        return [f for f, _ in decode_stream(buf, expect)]

    def expect_error(name, buf, want, expect=None, n_ok=0):
        got_frames = []
        try:
            for f, _ in decode_stream(buf, expect):
                got_frames.append(f)
        except FrameError as e:
            check(name, e.check == want and len(got_frames) == n_ok,
                  "got %s after %d frames, want %s after %d"
                  % (e.check, len(got_frames), want, n_ok))
            return
        check(name, False, "no error, want %s" % want)

    # --- round trips
    sets = {"empty": [], "one": [_perf(0)], "three": [_perf(i) for i in range(3)],
            "many": [_perf(i) for i in range(200)]}
    for codec in ("deflate", "none"):
        for label, recs in sets.items():
            fr = encode_frame(recs, tenant=T0, batch=B0, data_type=5,
                              created_ms=CREATED, codec=codec)
            frames = decode_all(fr, expect=T0)
            ok = (len(frames) == 1 and frames[0]["records"] == recs
                  and frames[0]["header"]["record_count"] == len(recs)
                  and frames[0]["header"]["codec"] == codec
                  and frames[0]["header"]["tenant_id"] == str(uuid.UUID(bytes=T0))
                  and frames[0]["header"]["created_ms"] == CREATED
                  and len(fr) == 72 + frames[0]["header"]["body_len"])
            check("roundtrip-%s-%s" % (codec, label), ok)
    empty = encode_frame([], tenant=T0, batch=B0, data_type=5, created_ms=CREATED)
    check("empty-deflate-body", empty[68:-4] == b"\x03\x00" and len(empty) == 74)
    check("empty-input", decode_all(b"") == [])
    # key order preserved; JSON line shape
    fr = encode_frame([{"b": 1, "a": [1, {"z": None}]}], tenant=T0, batch=B0,
                      data_type=3, created_ms=-1, codec="none")
    line = frame_to_line(decode_all(fr)[0])
    check("json-form", line.startswith(b'{"header":{"magic":"894f5053","version":1,"flags":0,'
                                       b'"codec":"none","data_type":"Event"')
          and line.endswith(b'"records":[{"b":1,"a":[1,{"z":null}]}]}\n'), line)
    # UUID byte order
    t = uuid.UUID("00112233-4455-6677-8899-aabbccddeeff").bytes
    fr = encode_frame([], tenant=t, batch=B0, data_type=1, created_ms=0)
    check("uuid-order", fr[16:32] == bytes.fromhex("00112233445566778899aabbccddeeff"))
    # concatenated frames, all data types
    cat = b"".join(encode_frame([{"i": i}], tenant=T0, batch=B0, data_type=i,
                                created_ms=CREATED, codec="deflate" if i % 2 else "none")
                   for i in range(1, 7))
    fs = decode_all(cat)
    check("concatenated", [f["header"]["data_type"] for f in fs] == list(DATA_TYPES.values())
          and [f["records"] for f in fs] == [[{"i": i}] for i in range(1, 7)])
    # sealed frame: records null
    seal = bytes(range(68))
    sealed = _raw(b"", b"opaque-ciphertext", codec=1, record_count=3, content_len=99,
                  flags=FLAG_SEALED, seal=seal)
    fs = decode_all(sealed)
    check("sealed-null", len(fs) == 1 and fs[0]["records"] is None
          and fs[0]["header"]["flags"] == 1)

    good = encode_frame([_perf(0), _perf(1)], tenant=T0, batch=B0, data_type=5,
                        created_ms=CREATED)

    def mut(frame, off, val, recrc=False):
        f = bytearray(frame)
        f[off] = val
        return _recrc(bytes(f)) if recrc else bytes(f)

    # --- error cases
    expect_error("badmagic-0", mut(good, 0, 0x88), "BadMagic")
    expect_error("badmagic-2", mut(good, 2, ord("X")), "BadMagic")
    expect_error("badmagic-2-short", b"\x89OX", "BadMagic")
    expect_error("truncated-magic", b"\x89OP", "Truncated")
    expect_error("badversion", mut(good, 4, 2), "UnsupportedVersion")
    expect_error("headercrc", mut(good, 20, good[20] ^ 0x10), "HeaderCrc")
    expect_error("headercrc-crcbyte", mut(good, 66, good[66] ^ 0x01), "HeaderCrc")
    big = encode_frame([_perf(i) for i in range(30)], tenant=T0, batch=B0,
                       data_type=5, created_ms=CREATED, codec="none")
    expect_error("headercrc-sealedbit", mut(big, 5, 0x01), "HeaderCrc")
    expect_error("bodycrc", mut(good, 80, good[80] ^ 0x04), "BodyCrc")
    expect_error("truncated-body", good[:-1], "Truncated")
    expect_error("truncated-header", good[:40], "Truncated")
    expect_error("truncated-2nd", good + good[:70], "Truncated", n_ok=1)
    expect_error("tenantmismatch", good, "TenantMismatch",
                 expect=uuid.UUID("00112233-4455-6677-8899-aabbccddeeff").bytes)
    expect_error("tenantmismatch-before-body", good[:68], "TenantMismatch",
                 expect=uuid.UUID("00112233-4455-6677-8899-aabbccddeeff").bytes)
    expect_error("reservedflags", mut(good, 5, 0x02, True), "ReservedFlags")
    expect_error("unknowncodec", mut(good, 6, 2, True), "UnknownCodec")
    expect_error("unknowndatatype", mut(good, 7, 7, True), "UnknownDataType")
    expect_error("schemaversion", mut(good, 9, 2, True), "UnsupportedSchemaVersion")
    expect_error("reservednotzero", mut(good, 11, 1, True), "ReservedNotZero")
    nil_t = bytearray(good)
    nil_t[16:32] = bytes(16)
    expect_error("nilid", _recrc(bytes(nil_t)), "NilId")
    expect_error("createdoutofrange",
                 _raw(b"", deflate(b""), created_ms=CREATED_MAX + 1), "CreatedOutOfRange")
    check("created-max-ok", len(decode_all(_raw(b"", deflate(b""), created_ms=CREATED_MAX))) == 1)
    check("created-min-ok", len(decode_all(_raw(b"", deflate(b""), created_ms=CREATED_MIN))) == 1)
    expect_error("createdoutofrange-min",
                 _raw(b"", deflate(b""), created_ms=CREATED_MIN - 1), "CreatedOutOfRange")
    hdr = build_header(codec=1, data_type=5, record_count=0, tenant=T0, batch=B0,
                       created_ms=CREATED, content_len=0, body_len=BODY_LIMIT + 1)
    expect_error("bodytoolarge", hdr + struct.pack(">I", crc32(hdr)), "BodyTooLarge")
    expect_error("lengthmismatch", _raw(b"{}\n", b"{}\n", codec=0, content_len=4),
                 "LengthMismatch")
    # DEFLATE with trailing bytes
    p = build_payload([_perf(0)])
    expect_error("trailingdata", _raw(p, deflate(p) + b"\x00"), "TrailingData")
    # DEFLATE inflating to more than content_len
    expect_error("inflateoverflow", _raw(p, deflate(p), content_len=len(p) - 1),
                 "InflateOverflow")
    bomb = b"\n" * 1000000
    expect_error("inflateoverflow-bomb", _raw(b"{}\n", deflate(bomb), content_len=3),
                 "InflateOverflow")
    expect_error("inflateshort", _raw(p, deflate(p), content_len=len(p) + 1), "InflateShort")
    expect_error("inflatestalled", _raw(p, deflate(p)[:-3]), "InflateStalled")
    expect_error("corrupt", _raw(p, b"\xff" + deflate(p)[1:]), "Corrupt")
    expect_error("recordcount", _raw(p, deflate(p), record_count=2), "RecordCount")
    expect_error("recordcount-nonl", _raw(b"{}", b"{}", codec=0, record_count=1), "RecordCount")
    expect_error("record-notobject", _raw(b"[]\n", b"[]\n", codec=0), "Record")
    expect_error("record-dupkey", _raw(b'{"a":1,"a":2}\n', b'{"a":1,"a":2}\n', codec=0), "Record")
    deep = b'{"a":' + b"[" * 127 + b"]" * 127 + b"}\n"
    expect_error("record-deep", _raw(deep, deep, codec=0), "Record")
    ok_deep = b'{"a":' + b"[" * 126 + b"]" * 126 + b"}\n"
    check("record-depth-127-ok", len(decode_all(_raw(ok_deep, ok_deep, codec=0))) == 1)
    long_line = b'{"a":"' + b"x" * RECORD_SIZE_LIMIT + b'"}\n'
    expect_error("recordtoolarge", _raw(long_line, deflate(long_line)), "RecordTooLarge")
    # a good frame followed by a bad one: the first still decodes
    expect_error("good-then-bad", good + mut(good, 1, 0), "BadMagic", n_ok=1)

    print("selftest: %d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1


def main(argv=None):
    ap = argparse.ArgumentParser(prog="opsf.py", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("encode", help="JSON Lines on stdin -> one unsealed frame on stdout")
    e.add_argument("--tenant", required=True)
    e.add_argument("--data-type", required=True)
    e.add_argument("--codec", choices=("deflate", "none"), default="deflate")
    e.add_argument("--batch-id", required=True)
    e.add_argument("--created-ms", required=True, type=int)
    e.add_argument("--level", type=int, default=6)
    d = sub.add_parser("decode", help="frames on stdin -> JSON lines on stdout")
    d.add_argument("--expect-tenant")
    sub.add_parser("selftest", help="run the built-in self-test")
    args = ap.parse_args(argv)
    if args.cmd == "encode":
        return cmd_encode(args)
    if args.cmd == "decode":
        return cmd_decode(args)
    return selftest()


if __name__ == "__main__":
    sys.exit(main())
