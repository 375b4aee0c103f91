#!/usr/bin/env python3
"""opsf_seal.py: seal, open and rewrap OPSF v1 frames, independently.

Written from the "Sealed frames" section of docs/FRAME.md only, to
cross-check the Rust implementation (frametool seal/open/rewrap). Uses
opsf.py (also written from the document) to check frames, and the
`cryptography` package for AES-256-GCM.

Subcommands (frames on stdin, frames on stdout; keys are 64 hex digits):
  seal   --kek-id N --kek-hex HEX
  open   --kek-id N --kek-hex HEX
  rewrap --from-kek-id N --from-kek-hex HEX --to-kek-id M --to-kek-hex HEX
Exit status 2 with a one-line message on the first frame that fails.
"""

import argparse
import os
import struct
import sys

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import opsf  # noqa: E402

FIXED = 64
SEAL = 68
TAG = 16
ZERO_NONCE = bytes(12)


class SealError(Exception):
    pass


def frames(buf):
    """Split concatenated frames, each checked by opsf.read_frame."""
    pos = 0
    while pos < len(buf):
        _, nxt = opsf.read_frame(buf, pos)
        yield buf[pos:nxt]
        pos = nxt


def crc(data):
    return struct.pack(">I", opsf.crc32(data))


def seal(frame, kek_id, kek):
    if frame[5] & opsf.FLAG_SEALED:
        raise SealError("already sealed")
    body_len = struct.unpack_from(">I", frame, 60)[0]
    body = frame[FIXED + 4:FIXED + 4 + body_len]
    fixed = bytearray(frame[:FIXED])
    fixed[5] |= opsf.FLAG_SEALED
    struct.pack_into(">I", fixed, 60, body_len + TAG)
    fixed = bytes(fixed)
    dek = os.urandom(32)
    nonce = os.urandom(12)
    head8 = bytes([1, 0, 0, 0]) + struct.pack(">I", kek_id)
    wrapped = AESGCM(kek).encrypt(nonce, dek, fixed + head8)
    section = head8 + nonce + wrapped
    assert len(section) == SEAL
    ct = AESGCM(dek).encrypt(ZERO_NONCE, body, fixed)
    return fixed + section + crc(fixed + section) + ct + crc(ct)


def unwrap(frame, keys):
    """The fixed header, seal section, DEK and body of a sealed frame."""
    if not frame[5] & opsf.FLAG_SEALED:
        raise SealError("not sealed")
    fixed = frame[:FIXED]
    section = frame[FIXED:FIXED + SEAL]
    if section[0] != 1:
        raise SealError("unsupported suite %d" % section[0])
    if section[1:4] != bytes(3):
        raise SealError("reserved bytes are not zero")
    kek_id = struct.unpack_from(">I", section, 4)[0]
    body_len = struct.unpack_from(">I", fixed, 60)[0]
    if kek_id == 0 or body_len < TAG:
        raise SealError("malformed seal section")
    if kek_id not in keys:
        raise SealError("unknown key %d" % kek_id)
    try:
        dek = AESGCM(keys[kek_id]).decrypt(section[8:20], section[20:68], fixed + section[:8])
    except InvalidTag:
        raise SealError("the wrapped data key failed authentication")
    body = frame[FIXED + SEAL + 4:FIXED + SEAL + 4 + body_len]
    return fixed, section, dek, body


def open_frame(frame, keys):
    fixed, _, dek, body = unwrap(frame, keys)
    try:
        plain = AESGCM(dek).decrypt(ZERO_NONCE, body, fixed)
    except InvalidTag:
        raise SealError("the body failed authentication")
    out = bytearray(fixed)
    out[5] &= ~opsf.FLAG_SEALED & 0xFF
    struct.pack_into(">I", out, 60, len(plain))
    out = bytes(out)
    return out + crc(out) + plain + crc(plain)


def rewrap(frame, keys, to_id):
    fixed, _, dek, _ = unwrap(frame, keys)
    nonce = os.urandom(12)
    head8 = bytes([1, 0, 0, 0]) + struct.pack(">I", to_id)
    section = head8 + nonce + AESGCM(keys[to_id]).encrypt(nonce, dek, fixed + head8)
    return fixed + section + crc(fixed + section) + frame[FIXED + SEAL + 4:]


def key(text):
    b = bytes.fromhex(text)
    if len(b) != 32:
        raise ValueError("a key is 32 bytes")
    return b


def main(argv=None):
    ap = argparse.ArgumentParser(prog="opsf_seal.py")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("seal", "open"):
        p = sub.add_parser(name)
        p.add_argument("--kek-id", type=int, required=True)
        p.add_argument("--kek-hex", type=key, required=True)
    r = sub.add_parser("rewrap")
    r.add_argument("--from-kek-id", type=int, required=True)
    r.add_argument("--from-kek-hex", type=key, required=True)
    r.add_argument("--to-kek-id", type=int, required=True)
    r.add_argument("--to-kek-hex", type=key, required=True)
    args = ap.parse_args(argv)
    buf = sys.stdin.buffer.read()
    out = []
    try:
        for frame in frames(buf):
            if args.cmd == "seal":
                out.append(seal(frame, args.kek_id, args.kek_hex))
            elif args.cmd == "open":
                out.append(open_frame(frame, {args.kek_id: args.kek_hex}))
            else:
                keys = {args.from_kek_id: args.from_kek_hex, args.to_kek_id: args.to_kek_hex}
                out.append(rewrap(frame, keys, args.to_kek_id))
    except (SealError, opsf.FrameError) as e:
        sys.stderr.write("opsf_seal.py: %s\n" % e)
        return 2
    sys.stdout.buffer.write(b"".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
