"""An independent reader of sealed bundles, written from docs/FORMAT.md
alone (libsodium through PyNaCl for XChaCha20-Poly1305): it shares no code
with sealinit. Usage: read_bundle.py KEY_FILE BUNDLE_FILE NOW

Prints "ok" then one line per entry, "NAME HEX(value)" (version 1) or
"NAME HEX(value) DELIVERY" (version 2); or "error KIND" for a bundle the
format says to refuse. Exit status 0 either way; 2 on misuse."""

import json
import re
import struct
import sys

from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_decrypt
from nacl.exceptions import CryptoError

MAGIC = b"SEALINIT"
DELIVERIES = {0: "env", 1: "setup", 2: "proxy"}
NAME = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*\Z")
MEMBERS = {"version", "created", "expires", "label", "repo", "part", "bindings", "egress"}


class Refused(Exception):
    pass


def read(key, data, now):
    if len(data) < 13 or data[:8] != MAGIC:
        raise Refused("not-a-bundle")
    version = data[8]
    if version == 0 or version > 2:
        raise Refused("newer-version" if version > 2 else "other")
    (n,) = struct.unpack("<I", data[9:13])
    if not 2 <= n <= 65536:
        raise Refused("other")
    if len(data) < 13 + n + 24 + 4 + 16:
        raise Refused("truncated")
    header = json.loads(data[13 : 13 + n])
    if set(header) - MEMBERS or header.get("version") != version:
        raise Refused("other")
    if (version == 1) == ("repo" in header):
        raise Refused("other")
    if version == 1 and ("part" in header or "bindings" in header or "egress" in header):
        raise Refused("other")
    if ("part" in header) != ("bindings" in header) or ("egress" in header and "part" not in header):
        raise Refused("other")
    nonce = data[13 + n : 37 + n]
    try:
        payload = crypto_aead_xchacha20poly1305_ietf_decrypt(
            data[37 + n :], data[: 13 + n], nonce, key
        )
    except CryptoError:
        raise Refused("authentication")
    (count,) = struct.unpack("<I", payload[:4])
    if count > 10000:
        raise Refused("payload")
    at, entries, seen = 4, [], set()
    fixed = 7 if version == 2 else 6
    for _ in range(count):
        if at + fixed > len(payload):
            raise Refused("payload")
        name_len, value_len = struct.unpack("<HI", payload[at : at + 6])
        delivery = DELIVERIES.get(payload[at + 6]) if version == 2 else "env"
        if delivery is None:
            raise Refused("payload")
        start = at + fixed
        eq = start + name_len
        nul = eq + 1 + value_len
        if nul >= len(payload):
            raise Refused("payload")
        name, value = payload[start:eq], payload[eq + 1 : nul]
        if (
            not NAME.match(name)
            or name.startswith(b"SEALINIT_")
            or payload[eq] != 0x3D
            or payload[nul] != 0
            or 0 in value
            or name_len + 1 + value_len > 131071
            or name in seen
        ):
            raise Refused("payload")
        seen.add(name)
        entries.append((name.decode(), value, delivery))
        at = nul + 1
    if at != len(payload):
        raise Refused("payload")
    expires = header.get("expires")
    if expires is not None and now >= expires:
        raise Refused("expired")
    return version, entries


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    key = open(sys.argv[1], "rb").read()
    data = open(sys.argv[2], "rb").read()
    try:
        version, entries = read(key, data, int(sys.argv[3]))
    except Refused as r:
        print(f"error {r}")
        return
    print("ok")
    for name, value, delivery in entries:
        line = f"{name} {value.hex()}"
        print(line if version == 1 else f"{line} {delivery}")


main()
