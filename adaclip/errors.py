"""One error base class for domain failures, so callers can catch ours and nothing else."""


class AdaclipError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(AdaclipError, ValueError):
    """A config file or override is missing, unknown or ill-typed; the message names the field."""


class VideoDecodeError(AdaclipError):
    """A file is missing, empty, truncated, corrupt or not a video; the message names the file and why."""

    def __init__(self, path: object, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot decode video {self.path}: {reason}")


class DataError(AdaclipError):
    """An annotation file is malformed or refers to something that is not there."""


class IndexUnavailableError(AdaclipError):
    """The vector index cannot be reached or opened right now (server down, timeout, shard locked);
    retrying later may succeed, so the HTTP layer answers 503 with Retry-After."""


class IndexBusyError(AdaclipError):
    """The index has as much of some bounded work (exact searches) as it takes; retry later (503)."""


class ModelChangedError(IndexBusyError):
    """Vectors of another model than the index's active one (the service moved to a new model
    while the request ran); retrying uses the new model (503)."""
