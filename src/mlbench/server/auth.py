"""Bearer tokens: created with ``mlbench token create`` (admin) or by the scheduler for each run
it launches (upload, scoped to that run). Missing/invalid token → 401; valid but wrong scope → 403.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from mlbench.server.models import Token

PREFIX = "mlb_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(s: Session, name: str, scope: str = "admin", run_id: str | None = None) -> str:
    """Store a new token's hash and return the token (the only time it is visible)."""
    if scope not in ("admin", "upload"):
        raise ValueError(f"unknown token scope {scope!r}")
    if scope == "upload" and run_id is None:
        raise ValueError("an upload token is scoped to one run")
    token = PREFIX + secrets.token_urlsafe(32)
    s.add(Token(name=name, token_hash=hash_token(token), scope=scope, run_id=run_id))
    s.flush()
    return token


def lookup(s: Session, token: str) -> Token | None:
    digest = hash_token(token)
    found = s.scalar(select(Token).where(Token.token_hash == digest))
    # constant-time comparison of the digests (the indexed lookup already matched)
    if found is not None and hmac.compare_digest(found.token_hash, digest):
        return found
    return None


def revoke_upload_tokens(s: Session, run_id: str) -> None:
    """Delete a run's upload tokens: called when the run ends (the ingest route also refuses
    them for an ended run, so a token whose deletion was missed is useless too)."""
    s.execute(delete(Token).where(Token.run_id == run_id, Token.scope == "upload"))
