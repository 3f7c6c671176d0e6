"""Deployment settings: the one place that reads the environment.

Everything else receives a :class:`Settings`. Variables:

- ``MEPHISTO_DIST_DATA_DIR``: data directory (SQLite file, embedded Redis socket, builds, uploads);
  default ``~/.mephisto-dist``.
- ``MEPHISTO_DIST_DATABASE_URL``: SQLAlchemy URL; default SQLite in the data directory.
- ``MEPHISTO_DIST_REDIS_URL``: Redis URL (``redis://`` or ``unix://``); unset means the CLI starts an
  embedded Redis server on a unix socket in the data directory.
- ``MEPHISTO_DIST_STORAGE_URL``: where run bundles and uploads live, ``file:///PATH`` or
  ``s3://BUCKET/PREFIX`` (boto3's standard AWS configuration: profiles, ``AWS_ENDPOINT_URL_S3``);
  default ``file://<data dir>/storage``.
- ``MEPHISTO_DIST_FLOWER_BASIC_AUTH``: ``user:password`` (comma-separated for several) that
  ``mephisto-dist flower`` requires; Flower's own ``FLOWER_BASIC_AUTH`` / ``FLOWER_AUTH`` count too.
- ``MEPHISTO_DIST_REVIEW_USERS``: ``reviewer:password`` (comma-separated for several) that
  ``mephisto-dist review-app`` requires; each decision made in it records its reviewer.
- ``MEPHISTO_DIST_REVIEW_SECRET``: the key that signs the review app's sessions (at least 32 characters;
  unset, a key made at start: sessions end when the app restarts, and several app processes need one).
- ``MEPHISTO_DIST_METRICS_PORT``: where ``web`` serves Prometheus metrics (its own listener; unset: none).
- ``MEPHISTO_DIST_MAX_CONCURRENT_UNITS``: deployment-wide cap across all runs (0 = none).
- ``MEPHISTO_DIST_MAX_UPLOAD_BYTES``: largest accepted submission body (default 50 MiB).
- ``MEPHISTO_DIST_WEB_THREADS``: how many hot-path requests (request_agent, submit_task) one web process
  runs at once on PostgreSQL, each in a thread (default 4); the others wait on the event loop. More
  threads only contend for the interpreter lock and the database: on 2 cores, 40 tripled the p99, and
  with 2 web processes and 100 workers at cap 50, 4 threads gave 204-246 units/s against 159-234 for 8.
  A database across a network (more time waiting per statement) may want more.
- ``MEPHISTO_DIST_LEASE_TTL_S``: concurrency-token lease length (default 60 s).
- ``MEPHISTO_DIST_PROVIDER_CALLS_PER_S``: shared rate for crowd-provider API calls (default 5).
- ``MEPHISTO_DIST_DEPLOYMENT``: this deployment's name, written on every HIT it creates so that two
  deployments sharing a requester account tell their HITs apart (default ``default``).
- ``MEPHISTO_DIST_REDIS_TIMEOUT_S``: how long a Redis command or connection may take before it fails
  (after two quick retries) with an error naming Redis (default 5 s).
- ``MEPHISTO_DIST_PROVIDER_MAX_ATTEMPTS``: how many times one provider call (a launch, a review side
  effect) is sent, across every re-send, before it is marked failed (default 5).
- ``MEPHISTO_DIST_PROVIDER_RETRY_BASE_S``: the first wait before re-sending a failed provider call; it
  doubles with each attempt, up to 10 minutes (default 10 s).
- ``MEPHISTO_DIST_PROVIDER_CALL_STALE_S``: a review side effect (an approval, a bonus) claimed this long ago
  by a process that never finished it is taken for abandoned (its process died) and made again; the
  provider's idempotency (MTurk's token, a Prolific bonus found on the submission) keeps it from being paid
  twice (default 300 s; a Celery worker's time limit on one call is kept below it).
- ``MEPHISTO_DIST_PROVIDER_CALL_SWEEP_EVERY_S``: beat interval of the sweep that re-sends such calls, and
  calls whose send was lost (default 60 s).
- ``MEPHISTO_DIST_POOL_RENEW_EVERY_S`` / ``MEPHISTO_DIST_RUN_SWEEP_EVERY_S``: beat intervals for renewing
  and repairing the concurrency pools (default 10 s, a sixth of the lease) and for closing and
  unstalling runs (default 5 s).
- ``MEPHISTO_DIST_HEARTBEAT_EVERY_S``: how often workers, beat and worker-facing servers leave a heartbeat
  (default 10 s); one missing for three periods counts as gone.
- ``MEPHISTO_DIST_BEAT_LOCK_TIMEOUT_S``: how long beat's lock in Redis outlives a beat that died (default
  30 s): a second beat takes over after at most this long.
- ``MEPHISTO_DIST_RECONCILE_EVERY_S``: beat interval of the server and crowd-provider reconcilers
  (default 60 s).
- ``MEPHISTO_DIST_LIVE_DISCONNECT_S``: a live page silent (no heartbeat) this long is disconnected and its
  unit goes back to the pool (default 15 s, Mephisto's router's ``FAILED_PING_TIME``; pages beat every 6 s).
- ``MEPHISTO_DIST_REMOTE_CALL_LEASE_S``: a Celery worker running a remote call renews a lease this long;
  when it lapses the worker is taken for dead and the call re-run once (default 3 s).
- ``MEPHISTO_DIST_REMOTE_CALL_TIMEOUT_S``: the longest a remote function may run; then the page is answered
  an error, the call is marked failed (never run again) and its Celery worker freed (default 60 s).
- ``MEPHISTO_DIST_LIVE_SWEEP_EVERY_S``: beat interval of the live sweep (silent pages, orphaned calls;
  default 2 s).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from mephisto_dist.errors import ConfigError

ENV_PREFIX = "MEPHISTO_DIST_"
# What a user should look at when a backing service cannot be reached.
DATABASE_HINT = (f"check {ENV_PREFIX}DATABASE_URL (host, port, database name, role and password) and that "
                 "the database server is running")
REDIS_HINT = f"check {ENV_PREFIX}REDIS_URL and that the Redis server is running"


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    redis_url: str | None
    storage_url: str = ""
    max_concurrent_units: int = 0
    max_upload_bytes: int = 50 * 1024 * 1024
    web_threads: int = 4
    # How long the web tier waits out an outage of the database or Redis (a restart, a failover) before
    # it answers a worker 503; 0 answers at once.
    outage_wait_s: float = 15.0
    lease_ttl_s: float = 60.0
    provider_calls_per_s: float = 5.0
    provider_max_attempts: int = 5
    redis_timeout_s: float = 5.0
    provider_retry_base_s: float = 10.0
    provider_call_stale_s: float = 300.0
    provider_call_sweep_every_s: float = 60.0
    pool_renew_every_s: float = 10.0
    run_sweep_every_s: float = 5.0
    deployment: str = "default"
    heartbeat_every_s: float = 10.0
    beat_lock_timeout_s: float = 30.0
    reconcile_every_s: float = 60.0
    # Secrets stay out of repr, so a logged Settings never shows them.
    flower_basic_auth: str | None = field(default=None, repr=False)
    flower_own_auth: bool = False
    review_users: str | None = field(default=None, repr=False)
    review_secret: str | None = field(default=None, repr=False)
    metrics_port: int | None = None
    live_disconnect_s: float = 15.0
    remote_call_lease_s: float = 3.0
    remote_call_timeout_s: float = 60.0
    live_sweep_every_s: float = 2.0
    # The outbox (``db.outbox``): beat's re-send sweep, the backoff between attempts, the attempts made
    # before a message is failed (``review resend`` sends it again).
    outbox_sweep_every_s: float = 5.0
    outbox_retry_base_s: float = 5.0
    outbox_max_attempts: int = 5
    # How long a claimed message stays its claimer's: past it, the claimer is presumed dead and the sweep
    # sends the message again. Every outbox handler's time limit (``celery.limits``) is kept below it.
    outbox_claim_stale_s: float = 120.0

    @property
    def embedded_redis(self) -> bool:
        return self.redis_url is None

    @property
    def embedded_redis_socket(self) -> Path:
        return self.data_dir / "redis.sock"

    @property
    def effective_redis_url(self) -> str:
        return self.redis_url or f"unix://{self.embedded_redis_socket}"

    @property
    def broker_url(self) -> str:
        """Celery's spelling of the same Redis (kombu names unix sockets ``redis+socket://``)."""
        url = self.effective_redis_url
        if url.startswith("unix://"):
            return "redis+socket://" + url[len("unix://"):]
        return url

    @property
    def heartbeat_stale_s(self) -> float:
        """A process whose last heartbeat is older than this is taken for gone."""
        return 3 * self.heartbeat_every_s

    @property
    def effective_storage_url(self) -> str:
        return self.storage_url or (self.data_dir / "storage").resolve().as_uri()

    @property
    def metrics_dir(self) -> Path:
        """Where this machine's processes write their Prometheus metrics (multiprocess mode)."""
        return self.data_dir / "metrics"

    @property
    def bundle_cache_dir(self) -> Path:
        """This machine's copies of run bundles fetched from storage."""
        return self.data_dir / "bundle-cache"

    def with_redis_url(self, url: str) -> Settings:
        return replace(self, redis_url=url)

    def to_env(self) -> dict[str, str]:
        """The environment that makes a child process see these same settings."""
        env = {
            f"{ENV_PREFIX}DATA_DIR": str(self.data_dir),
            f"{ENV_PREFIX}DATABASE_URL": self.database_url,
            f"{ENV_PREFIX}STORAGE_URL": self.effective_storage_url,
            f"{ENV_PREFIX}MAX_CONCURRENT_UNITS": str(self.max_concurrent_units),
            f"{ENV_PREFIX}MAX_UPLOAD_BYTES": str(self.max_upload_bytes),
            f"{ENV_PREFIX}WEB_THREADS": str(self.web_threads),
            f"{ENV_PREFIX}OUTAGE_WAIT_S": str(self.outage_wait_s),
            f"{ENV_PREFIX}LEASE_TTL_S": str(self.lease_ttl_s),
            f"{ENV_PREFIX}PROVIDER_CALLS_PER_S": str(self.provider_calls_per_s),
            f"{ENV_PREFIX}PROVIDER_MAX_ATTEMPTS": str(self.provider_max_attempts),
            f"{ENV_PREFIX}REDIS_TIMEOUT_S": str(self.redis_timeout_s),
            f"{ENV_PREFIX}PROVIDER_RETRY_BASE_S": str(self.provider_retry_base_s),
            f"{ENV_PREFIX}PROVIDER_CALL_STALE_S": str(self.provider_call_stale_s),
            f"{ENV_PREFIX}PROVIDER_CALL_SWEEP_EVERY_S": str(self.provider_call_sweep_every_s),
            f"{ENV_PREFIX}POOL_RENEW_EVERY_S": str(self.pool_renew_every_s),
            f"{ENV_PREFIX}RUN_SWEEP_EVERY_S": str(self.run_sweep_every_s),
            f"{ENV_PREFIX}DEPLOYMENT": self.deployment,
            f"{ENV_PREFIX}HEARTBEAT_EVERY_S": str(self.heartbeat_every_s),
            f"{ENV_PREFIX}BEAT_LOCK_TIMEOUT_S": str(self.beat_lock_timeout_s),
            f"{ENV_PREFIX}RECONCILE_EVERY_S": str(self.reconcile_every_s),
            f"{ENV_PREFIX}LIVE_DISCONNECT_S": str(self.live_disconnect_s),
            f"{ENV_PREFIX}REMOTE_CALL_LEASE_S": str(self.remote_call_lease_s),
            f"{ENV_PREFIX}REMOTE_CALL_TIMEOUT_S": str(self.remote_call_timeout_s),
            f"{ENV_PREFIX}LIVE_SWEEP_EVERY_S": str(self.live_sweep_every_s),
            f"{ENV_PREFIX}OUTBOX_SWEEP_EVERY_S": str(self.outbox_sweep_every_s),
            f"{ENV_PREFIX}OUTBOX_RETRY_BASE_S": str(self.outbox_retry_base_s),
            f"{ENV_PREFIX}OUTBOX_MAX_ATTEMPTS": str(self.outbox_max_attempts),
            f"{ENV_PREFIX}OUTBOX_CLAIM_STALE_S": str(self.outbox_claim_stale_s),
        }
        if self.redis_url is not None:
            env[f"{ENV_PREFIX}REDIS_URL"] = self.redis_url
        return env


def _number(env: Mapping[str, str], name: str, default: float, kind: type[float | int]) -> float:
    raw = env.get(ENV_PREFIX + name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{ENV_PREFIX}{name}={raw!r} is not a number") from None
    if value < 0:
        raise ConfigError(f"{ENV_PREFIX}{name}={raw!r} must not be negative")
    return value


def _deployment(name: str) -> str:
    if not name.replace("-", "").replace("_", "").isalnum() or len(name) > 64:
        raise ConfigError(f"{ENV_PREFIX}DEPLOYMENT={name!r} must be letters, digits, '-' or '_' (at most 64)")
    return name


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    data_dir = Path(env.get(ENV_PREFIX + "DATA_DIR") or Path.home() / ".mephisto-dist").expanduser()
    database_url = env.get(ENV_PREFIX + "DATABASE_URL") or f"sqlite:///{data_dir / 'mephisto-dist.db'}"
    storage_url = env.get(ENV_PREFIX + "STORAGE_URL") or ""
    if storage_url and not storage_url.startswith(("file:///", "s3://")):
        raise ConfigError(f"{ENV_PREFIX}STORAGE_URL={storage_url!r}: use file:///PATH or s3://BUCKET/PREFIX")
    flower_basic_auth = env.get(ENV_PREFIX + "FLOWER_BASIC_AUTH") or None
    if flower_basic_auth is not None and not all(
            user and password for user, _, password in (pair.partition(":") for pair in flower_basic_auth.split(","))):
        raise ConfigError(f"{ENV_PREFIX}FLOWER_BASIC_AUTH must be user:password (several: comma-separated)")
    metrics_port = int(_number(env, "METRICS_PORT", 0, int)) or None
    review_users = env.get(ENV_PREFIX + "REVIEW_USERS") or None
    if review_users is not None and not all(
            user and password for user, _, password in (pair.partition(":") for pair in review_users.split(","))):
        raise ConfigError(f"{ENV_PREFIX}REVIEW_USERS must be reviewer:password (several: comma-separated)")
    review_secret = env.get(ENV_PREFIX + "REVIEW_SECRET") or None
    if review_secret is not None and len(review_secret) < 32:
        raise ConfigError(f"{ENV_PREFIX}REVIEW_SECRET must be at least 32 characters")
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        redis_url=env.get(ENV_PREFIX + "REDIS_URL") or None,
        storage_url=storage_url,
        max_concurrent_units=int(_number(env, "MAX_CONCURRENT_UNITS", 0, int)),
        max_upload_bytes=int(_number(env, "MAX_UPLOAD_BYTES", 50 * 1024 * 1024, int)),
        web_threads=max(1, int(_number(env, "WEB_THREADS", 4, int))),
        outage_wait_s=float(_number(env, "OUTAGE_WAIT_S", 15.0, float)),
        lease_ttl_s=float(_number(env, "LEASE_TTL_S", 60.0, float)),
        provider_calls_per_s=float(_number(env, "PROVIDER_CALLS_PER_S", 5.0, float)),
        provider_max_attempts=max(1, int(_number(env, "PROVIDER_MAX_ATTEMPTS", 5, int))),
        redis_timeout_s=float(_number(env, "REDIS_TIMEOUT_S", 5.0, float)) or 5.0,
        provider_retry_base_s=float(_number(env, "PROVIDER_RETRY_BASE_S", 10.0, float)),
        # At least 10 s: a call's time limit (``celery.limits``) is kept below it and must leave it room.
        provider_call_stale_s=max(10.0, float(_number(env, "PROVIDER_CALL_STALE_S", 300.0, float))),
        provider_call_sweep_every_s=float(_number(env, "PROVIDER_CALL_SWEEP_EVERY_S", 60.0, float)) or 60.0,
        pool_renew_every_s=float(_number(env, "POOL_RENEW_EVERY_S", 10.0, float)),
        run_sweep_every_s=float(_number(env, "RUN_SWEEP_EVERY_S", 5.0, float)),
        deployment=_deployment(env.get(ENV_PREFIX + "DEPLOYMENT") or "default"),
        heartbeat_every_s=float(_number(env, "HEARTBEAT_EVERY_S", 10.0, float)),
        beat_lock_timeout_s=float(_number(env, "BEAT_LOCK_TIMEOUT_S", 30.0, float)),
        reconcile_every_s=float(_number(env, "RECONCILE_EVERY_S", 60.0, float)),
        flower_basic_auth=flower_basic_auth,
        flower_own_auth=bool(env.get("FLOWER_BASIC_AUTH") or env.get("FLOWER_AUTH")),
        review_users=review_users,
        review_secret=review_secret,
        metrics_port=metrics_port,
        live_disconnect_s=float(_number(env, "LIVE_DISCONNECT_S", 15.0, float)),
        remote_call_lease_s=float(_number(env, "REMOTE_CALL_LEASE_S", 3.0, float)),
        # Zero would be no limit at all: Celery reads a zero time limit as none.
        remote_call_timeout_s=float(_number(env, "REMOTE_CALL_TIMEOUT_S", 60.0, float)) or 60.0,
        live_sweep_every_s=float(_number(env, "LIVE_SWEEP_EVERY_S", 2.0, float)),
        outbox_sweep_every_s=float(_number(env, "OUTBOX_SWEEP_EVERY_S", 5.0, float)),
        outbox_retry_base_s=float(_number(env, "OUTBOX_RETRY_BASE_S", 5.0, float)),
        outbox_max_attempts=max(1, int(_number(env, "OUTBOX_MAX_ATTEMPTS", 5, int))),
        # At least 20 s: the handlers' time limits are kept below it and must leave them room.
        outbox_claim_stale_s=max(20.0, float(_number(env, "OUTBOX_CLAIM_STALE_S", 120.0, float))),
    )
