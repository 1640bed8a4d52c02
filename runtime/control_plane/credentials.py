"""Gateway credentials: JWTs signed with the control plane's Ed25519 key, and secrets sealed to a gateway's key."""

from __future__ import annotations

import base64
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.public import PublicKey, SealedBox

from streamforge.runtime.errors import ApiError
from streamforge.runtime.files import write_durably

ISSUER = "streamforge-control-plane"
AUDIENCE = "streamforge-gateway"
ALGORITHM = "EdDSA"  # the only one accepted: `alg: none`, HS256 with the public key as secret, ... are refused
TOKEN_LIFETIME_S = 365 * 24 * 3600  # spec: gateway JWTs are valid for one year and renewed before expiry


@dataclass(frozen=True)
class GatewayClaims:
    gateway_id: str
    expires_at: float
    token_id: str


class TokenSigner:
    """Issues and verifies gateway JWTs. The key lives in `key_file` (PEM, 0600), created on first use."""

    def __init__(self, key_file: Path | None, lifetime_s: float = TOKEN_LIFETIME_S) -> None:
        if key_file is not None and key_file.exists():
            loaded = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
            if not isinstance(loaded, Ed25519PrivateKey):
                raise RuntimeError(f"{key_file} is not an Ed25519 private key; move it away to generate a new one")
            self._key = loaded
        else:
            self._key = Ed25519PrivateKey.generate()
            if key_file is not None:
                pem = self._key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption())  # fmt: skip
                write_durably(key_file, pem)
        self._public = self._key.public_key()
        self.lifetime_s = lifetime_s

    def issue(self, gateway_id: str) -> tuple[str, float]:
        now = time.time()
        expires = now + self.lifetime_s
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": gateway_id, "iat": int(now), "exp": int(expires),
                  "jti": uuid.uuid4().hex}  # fmt: skip
        return jwt.encode(claims, self._key, algorithm=ALGORITHM), float(int(expires))

    def verify(self, token: str) -> GatewayClaims:
        """The token's claims, or 401 saying why it is refused (forged, expired, wrong algorithm, ...)."""
        try:
            claims = jwt.decode(token, self._public, algorithms=[ALGORITHM], audience=AUDIENCE, issuer=ISSUER,
                                options={"require": ["exp", "iat", "sub", "jti"]})  # fmt: skip
        except jwt.ExpiredSignatureError:
            raise ApiError(401, "token_expired", "the gateway token has expired: register again") from None
        except jwt.InvalidTokenError as exc:
            raise ApiError(401, "token_invalid", f"the gateway token is refused: {exc}") from None
        return GatewayClaims(str(claims["sub"]), float(claims["exp"]), str(claims["jti"]))


def seal(public_key_b64: str, value: str) -> str:
    """`value` encrypted to a gateway's X25519 public key (libsodium sealed box): only that gateway reads it."""
    box = SealedBox(PublicKey(base64.b64decode(public_key_b64)))
    return base64.b64encode(box.encrypt(value.encode())).decode()


def valid_public_key(public_key_b64: str) -> bool:
    try:
        PublicKey(base64.b64decode(public_key_b64, validate=True))
    except ValueError:  # bad base64, or a key of the wrong length (nacl.exceptions.ValueError)
        return False
    return True
