"""The exception tree. Adapters translate driver errors into these at the boundary; the CLI maps them
to exit codes and the web server to HTTP statuses."""


class MephistoDistError(Exception):
    """Root of every error this package raises on purpose. The message is meant for a user."""


class ConfigError(MephistoDistError):
    """A task folder, config file, override or data file is not usable."""


class NotFoundError(MephistoDistError):
    """A run, unit, agent or worker named by the caller does not exist."""


class NotAllowed(MephistoDistError):
    """A command the current state does not allow (a run already complete, a worker not holding what is
    revoked, ...): the caller's to change, like bad input."""


class IllegalTransition(MephistoDistError):
    """A status change the state machine does not allow (a programming error, not a race)."""


class RequestError(MephistoDistError):
    """A worker-facing request that cannot be honoured (bad agent id, oversized upload, ...).

    ``status_code`` is the HTTP status the web layer answers with.
    """

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code


class ServiceError(MephistoDistError):
    """A backing service (Redis, the database, a crowd provider) is missing or failed."""


class Unreachable(ServiceError):
    """A backing service could not be reached at all (refused, unknown host, bad credentials)."""


class ProviderError(ServiceError):
    """A crowd provider refused or failed a call; the message is the provider's own."""
