"""Who may use the review app and how they stay signed in: reviewers from ``MEPHISTO_DIST_REVIEW_USERS``,
and a session cookie signed with HMAC-SHA256 (``MEPHISTO_DIST_REVIEW_SECRET``) holding the reviewer's name,
a CSRF token every form must send back, and when it was issued."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass

SESSION_MAX_AGE_S = 12 * 3600
COOKIE = "mephisto_dist_review"


@dataclass(frozen=True)
class Session:
    reviewer: str
    csrf: str
    issued_at: float


def parse_reviewers(spec: str) -> dict[str, str]:
    """``reviewer:password[,reviewer:password]`` (validated by the settings) -> name to password."""
    reviewers: dict[str, str] = {}
    for pair in spec.split(","):
        name, _, password = pair.partition(":")
        reviewers[name.strip()] = password
    return reviewers


def check_login(reviewers: dict[str, str], name: str, password: str) -> bool:
    """Compared in constant time, and a password is compared even for an unknown name, so that neither
    timing nor the answer tells which names exist."""
    known = reviewers.get(name)
    matched = hmac.compare_digest(password.encode(), (known if known is not None else secrets.token_hex(16)).encode())
    return known is not None and matched


class SessionCodec:
    """Sign and check session cookies; nothing is kept on the server, so any app process can check one
    signed by another that shares the secret."""

    def __init__(self, secret: str) -> None:
        self._key = hashlib.sha256(secret.encode()).digest()

    def new(self, reviewer: str, *, now: float) -> Session:
        return Session(reviewer, secrets.token_urlsafe(24), now)

    def dump(self, session: Session) -> str:
        body = base64.urlsafe_b64encode(json.dumps(
            {"r": session.reviewer, "c": session.csrf, "t": session.issued_at}).encode()).decode()
        return f"{body}.{self._sign(body)}"

    def load(self, cookie: str | None, *, now: float) -> Session | None:
        """The session, or None for a missing, forged, malformed or expired cookie."""
        if not cookie or "." not in cookie:
            return None
        body, _, signature = cookie.rpartition(".")
        if not hmac.compare_digest(signature, self._sign(body)):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(body.encode()))
            session = Session(str(data["r"]), str(data["c"]), float(data["t"]))
        except (ValueError, KeyError, TypeError):
            return None
        if now - session.issued_at > SESSION_MAX_AGE_S:
            return None
        return session

    def _sign(self, body: str) -> str:
        return hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()
