"""Serving the review app: refuses without reviewers, binds 127.0.0.1 unless told, one process."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

import uvicorn

from mephisto_dist.errors import ConfigError
from mephisto_dist.review_app.app import make_app
from mephisto_dist.review_app.sessions import parse_reviewers
from mephisto_dist.runtime import Runtime

log = logging.getLogger(__name__)

NO_REVIEWERS = ("review-app needs reviewers: set MEPHISTO_DIST_REVIEW_USERS=reviewer:password "
                "(several: comma-separated)")


def serve(runtime: Runtime, *, host: str, port: int, secure_cookie: bool, mephisto_client: Path | None = None) -> None:
    settings = runtime.settings
    if not settings.review_users:
        raise ConfigError(NO_REVIEWERS)
    secret = settings.review_secret
    if secret is None:
        secret = secrets.token_urlsafe(32)
        log.warning("MEPHISTO_DIST_REVIEW_SECRET is not set: sessions end when this process stops, and "
                    "another review-app process cannot read them")
    app = make_app(runtime, parse_reviewers(settings.review_users), secret, secure_cookie=secure_cookie,
                   mephisto_client=mephisto_client)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
