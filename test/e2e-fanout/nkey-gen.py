#!/usr/bin/env python3
"""NATS nkeys and JWTs made here with python3's cryptography (ed25519;
Debian's python3-cryptography, which .ci/setup installs).

  nkey-gen.py FILE      a user nkey written to FILE as `nk -gen user
                        -pubout` writes it (the seed, then the public
                        key); the public key printed (the server's config)
  nkey-gen.py --creds DIR
                        an operator, its account APP and a user of it, as
                        `nsc` makes them: DIR/operator.jwt, DIR/account
                        (the account's public key, a space, its JWT: the
                        server's resolver_preload) and DIR/user.creds"""
import base64
import hashlib
import json
import os
import sys
import time

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


SEED = 18 << 3  # 'S'
OPERATOR, ACCOUNT, USER = 14 << 3, 0, 20 << 3  # 'O', 'A', 'U'


def keypair(prefix):
    """(seed text, public key text, private key)"""
    seed = os.urandom(32)
    key = Ed25519PrivateKey.from_private_bytes(seed)
    pub = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    seed_text = encode(bytes([SEED | (prefix >> 5), (prefix & 31) << 3]) + seed)
    return seed_text, encode(bytes([prefix]) + pub), key


def b64(data):
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def jwt(issuer_key, issuer, subject, name, nats):
    """nats-io/jwt v2's encoding: jti the base32 SHA-256 of the claims
    without it, signed by the issuer's key over header.payload"""
    claims = {"iat": int(time.time()), "iss": issuer, "name": name,
              "sub": subject, "nats": dict(nats, version=2)}
    claims["jti"] = base64.b32encode(hashlib.sha256(
        json.dumps(claims, sort_keys=True).encode()).digest()).decode().rstrip("=")
    head = b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = issuer_key.sign((head + "." + body).encode())
    return head + "." + body + "." + b64(sig)


def creds(out):
    _, opub, okey = keypair(OPERATOR)
    _, apub, akey = keypair(ACCOUNT)
    useed, upub, _ = keypair(USER)
    no_limit = {k: -1 for k in ("subs", "data", "payload", "imports",
                                "exports", "conn", "leaf")}
    with open(os.path.join(out, "operator.jwt"), "w") as f:
        f.write(jwt(okey, opub, opub, "uvp-test", {"type": "operator"}) + "\n")
    with open(os.path.join(out, "account"), "w") as f:
        f.write(apub + " " + jwt(okey, opub, apub, "APP", {
            "type": "account", "limits": dict(no_limit, wildcards=True)}) + "\n")
    user = jwt(akey, apub, upub, "fanout", {
        "type": "user", "pub": {}, "sub": {}, "subs": -1, "data": -1,
        "payload": -1})
    path = os.path.join(out, "user.creds")
    with open(path, "w") as f:
        f.write("-----BEGIN NATS USER JWT-----\n%s\n------END NATS USER JWT------\n\n"
                "-----BEGIN USER NKEY SEED-----\n%s\n------END USER NKEY SEED------\n"
                % (user, useed))
    os.chmod(path, 0o600)


if sys.argv[1] == "--creds":
    creds(sys.argv[2])
    sys.exit(0)
seed_text, pub_text, _ = keypair(USER)
with open(sys.argv[1], "w") as f:
    f.write(seed_text + "\n" + pub_text + "\n")
os.chmod(sys.argv[1], 0o600)
print(pub_text)
