"""API tokens: `rl_<id>_<secret>`, 60 characters of [A-Za-z0-9_], which other dialects' clients
accept as their API keys (the wandb client wants at least 40 such characters). The id names the
token in the log and in listings; only a SHA-256 of the secret is kept. The secret is 40 random
alphanumerics (~238 bits): a slow password hash would add nothing against guessing it."""

from __future__ import annotations

import hashlib
import re
import secrets
import string

_ALPHABET = string.ascii_letters + string.digits
TOKEN_PREFIX = "rl_"
ID_CHARS, SECRET_CHARS = 16, 40
SHAPE = re.compile(rf"rl_([A-Za-z0-9]{{{ID_CHARS}}})_([A-Za-z0-9]{{{SECRET_CHARS}}})")


def _random(n: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(n))


def new_token() -> tuple[str, str, str]:
    """(token id, the whole token shown once, the hash to keep)."""
    token_id, secret = _random(ID_CHARS), _random(SECRET_CHARS)
    return token_id, f"{TOKEN_PREFIX}{token_id}_{secret}", secret_hash(secret)


def split(token: str) -> tuple[str, str] | None:
    """(id, secret) of a well-shaped token, else None."""
    m = SHAPE.fullmatch(token.strip())
    return (m.group(1), m.group(2)) if m else None


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def looks_like_token(value: str) -> bool:
    return value.startswith(TOKEN_PREFIX) and SHAPE.fullmatch(value) is not None
