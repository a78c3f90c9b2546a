#!/usr/bin/env python3
"""A NATS user nkey made here (python3's cryptography: ed25519), written
to FILE as `nk -gen user -pubout` writes it (the seed, then the public
key), the public key printed (for the server's config).  Exits 1 without
the cryptography module.  Usage: nkey-gen.py FILE"""
import base64
import os
import sys

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def crc16(data):  # XMODEM, as the nkeys encoding uses
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def encode(raw):
    raw += crc16(raw).to_bytes(2, "little")
    return base64.b32encode(raw).decode().rstrip("=")


USER = 20 << 3  # 'U'
SEED = 18 << 3  # 'S'
seed = os.urandom(32)
pub = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(
    Encoding.Raw, PublicFormat.Raw)
seed_text = encode(bytes([SEED | (USER >> 5), (USER & 31) << 3]) + seed)
pub_text = encode(bytes([USER]) + pub)
with open(sys.argv[1], "w") as f:
    f.write(seed_text + "\n" + pub_text + "\n")
os.chmod(sys.argv[1], 0o600)
print(pub_text)
