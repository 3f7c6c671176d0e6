"""Driver errors (SQLAlchemy and its DBAPI drivers, redis-py, kombu) as one line a user can act on.

A command that cannot reach its database or Redis should say which URL (password masked) failed, the
driver's own first line of why, and which setting to check; never a traceback.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

import kombu.exceptions
import redis.exceptions
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from mephisto_dist.errors import ConfigError, MephistoDistError, ServiceError, Unreachable
from mephisto_dist.settings import DATABASE_HINT, REDIS_HINT, Settings, load_settings


def translate(error: BaseException, settings: Settings | None = None) -> ServiceError | None:
    """The :class:`ServiceError` saying what ``error`` means, or ``None`` when it is no driver's."""
    if isinstance(error, sa_exc.SQLAlchemyError) and _is_driver_error(error):
        settings = settings or _settings()
        return database_error(error, settings.database_url if settings else None)
    redis_error = _redis_error(error)
    if redis_error is not None:
        settings = settings or _settings()
        url = mask_url(settings.effective_redis_url) if settings else "Redis"
        reason = f"{_first_line(str(redis_error))}; {REDIS_HINT}"
        if isinstance(redis_error, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
            return Unreachable(f"cannot reach Redis at {url}: {reason}")
        return ServiceError(f"error from Redis at {url}: {reason}")
    return None


def database_error(error: sa_exc.SQLAlchemyError, database_url: str | None) -> ServiceError:
    """A database driver's ``error`` as one line naming ``database_url`` (password masked): an
    :class:`Unreachable` when the connection failed, else a :class:`ServiceError`. The db adapter raises
    it in place of the driver's error; the driver's stays its ``__cause__``."""
    url = mask_url(database_url) if database_url else "the database"
    if _is_connection_error(error):
        return Unreachable(f"cannot reach the database at {url}: {_reason(error)}; {DATABASE_HINT}")
    return ServiceError(f"error from the database at {url}: {_reason(error)}; {DATABASE_HINT}")


def is_database_driver_error(error: BaseException) -> bool:
    """Whether ``error`` is a database driver's failure (connection, statement, pool timeout) that the
    db adapter translates. A constraint violation is not: the code that wrote the row handles it (a
    row another process made first)."""
    return (isinstance(error, sa_exc.SQLAlchemyError) and _is_driver_error(error)
            and not isinstance(error, sa_exc.IntegrityError))


def is_outage(error: BaseException) -> bool:
    """Whether ``error``, or an error that caused it, says the database or Redis cannot be reached right
    now (refused, dropped, timed out): what a restart or a failover looks like for a few seconds, so a
    call that failed this way may succeed if made again. Any other error is an answer."""
    seen: BaseException | None = error
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, Unreachable):
            return True
        if isinstance(seen, MephistoDistError) and not isinstance(seen, ServiceError):
            return False  # an answer (a refusal, a missing run), whatever it was raised while handling
        if isinstance(seen, sa_exc.SQLAlchemyError):
            return _is_driver_error(seen) and _is_connection_error(seen)
        if isinstance(seen, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError |
                      kombu.exceptions.OperationalError):
            return True
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
    return False


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(an unparsable URL)"
    if parts.password is None:
        return url
    if parts.scheme.startswith(("postgresql", "sqlite", "mysql")):
        try:
            return make_url(url).render_as_string(hide_password=True)
        except sa_exc.ArgumentError:
            pass
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit((parts.scheme, f"{user}:***@{host}{port}", parts.path, parts.query, parts.fragment))


def _settings() -> Settings | None:
    try:
        return load_settings()
    except ConfigError:
        return None


def _is_driver_error(error: sa_exc.SQLAlchemyError) -> bool:
    return isinstance(error, sa_exc.DBAPIError | sa_exc.TimeoutError)


def _is_connection_error(error: sa_exc.SQLAlchemyError) -> bool:
    return isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError)


def _reason(error: sa_exc.SQLAlchemyError) -> str:
    original = getattr(error, "orig", None)
    return _first_line(str(original if original is not None else error))


def _redis_error(error: BaseException) -> redis.exceptions.RedisError | None:
    """The redis-py error behind ``error`` (kombu wraps them when Celery's broker is unreachable)."""
    seen: BaseException | None = error
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, redis.exceptions.RedisError):
            return seen
        if isinstance(seen, kombu.exceptions.OperationalError):
            return redis.exceptions.ConnectionError(str(seen))
        seen = seen.__cause__ or seen.__context__
    return None


def _first_line(text: str) -> str:
    """The driver's reason without its traceback-like continuation lines, whitespace collapsed."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    first = lines[0] if lines else "no reason given"
    first = re.sub(r"^\(?[\w.]+\.\w+Error\)?\s*", "", first)  # "(psycopg.OperationalError) ..."
    return re.sub(r"\s+", " ", first).rstrip(".")
