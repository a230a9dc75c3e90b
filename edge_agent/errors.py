"""The closed error hierarchy: one subclass per recovery action.

Third-party exceptions are translated into these once, at the boundary that
called the third party; everything above that boundary sees only these.
"""

from __future__ import annotations

# Exit codes of the `edge-agent` command, one place for all of them.
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_MODEL = 3
EXIT_INPUT = 4
EXIT_CONFIG = 78  # EX_CONFIG from sysexits.h; the systemd unit does not restart on it
EXIT_INTERRUPTED = 130


class EdgeAgentError(Exception):
    """Base of every error edge-agent raises on purpose."""


class ConfigError(EdgeAgentError):
    """Bad configuration: report the offending key and exit non-zero."""


class StateDirInUseError(ConfigError):
    """Another edge-agent process holds the state directory: refuse to start."""


class InputError(EdgeAgentError):
    """One bad input (frame, sensor line, file): skip it and count it."""


class SourceError(EdgeAgentError):
    """A source that cannot deliver (camera gone, command exited): back off, retry."""


class ModelError(EdgeAgentError):
    """A model that cannot be loaded or run: keep the active one or roll back."""


class PublishError(EdgeAgentError):
    """The broker refused or is unreachable: keep the event buffered, reconnect."""


class OutboxError(EdgeAgentError):
    """The outbox database cannot be read or written (I/O error, locked): keep
    the events in memory, retry later, never lose what is already stored."""


class DiskFullError(OutboxError):
    """The outbox's filesystem is full: nothing is written until space returns."""


class UpdateError(EdgeAgentError):
    """A model update that cannot be applied: reject it, keep the active model."""


class IntegrityError(UpdateError):
    """Bytes that fail verification (signature, length, hash): reject them."""


class SignatureError(IntegrityError):
    """The manifest's signature does not verify with any trusted key."""


class LengthError(IntegrityError):
    """A download is longer (or shorter) than the length the manifest states."""


class HashError(IntegrityError):
    """A download's SHA-256 differs from the manifest's."""


class ManifestError(UpdateError):
    """A signed manifest that is malformed, of an unknown spec_version, or unsafe
    (path traversal, absolute paths, bad URLs)."""


class RollbackError(UpdateError):
    """A manifest version lower than the trusted one (a replay or a downgrade)."""


class ExpiredError(UpdateError):
    """The manifest's `expires` is in the past."""


class FetchError(UpdateError):
    """The update server could not be reached or answered with an error. `status`:
    the HTTP status when the server answered with one (404: no such file)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class SelfTestError(UpdateError):
    """A verified model that does not load, allocate or run sanely."""


class DecryptError(UpdateError):
    """An encrypted model or labels file this device cannot open: reject it, keep
    the active model. The subclasses say why; the message names the file."""


class NotRecipientError(DecryptError):
    """The file was not encrypted for any key this device holds (a revoked device,
    a rotated device key that was not re-enrolled)."""


class WrongKeyError(DecryptError):
    """A key this device was handed does not match the one the signed manifest
    names (a stale or substituted group key file)."""


class TamperedError(DecryptError):
    """Authentication failed: a wrapped key or the ciphertext was altered."""


class TruncatedError(DecryptError):
    """An encrypted file shorter than its header says."""


class UploadError(EdgeAgentError):
    """A captured sample could not be sent to the sample server: kept, retried later."""


def exit_code(exc: BaseException) -> int:
    """The exit code for an error that ends a command."""
    if isinstance(exc, ConfigError):
        return EXIT_CONFIG
    if isinstance(exc, ModelError):
        return EXIT_MODEL
    if isinstance(exc, InputError):
        return EXIT_INPUT
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return EXIT_FAILURE
