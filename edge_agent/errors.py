"""The closed error hierarchy: one subclass per recovery action.

Third-party exceptions are translated into these once, at the boundary that
called the third party; everything above that boundary sees only these.
"""

from __future__ import annotations


class EdgeAgentError(Exception):
    """Base of every error edge-agent raises on purpose."""


class ConfigError(EdgeAgentError):
    """Bad configuration: report the offending key and exit non-zero."""


class InputError(EdgeAgentError):
    """One bad input (frame, sensor line, file): skip it and count it."""


class SourceError(EdgeAgentError):
    """A source that cannot deliver (camera gone, command exited): back off, retry."""


class ModelError(EdgeAgentError):
    """A model that cannot be loaded or run: keep the active one or roll back."""


class PublishError(EdgeAgentError):
    """The broker refused or is unreachable: keep the event buffered, reconnect."""


class UpdateError(EdgeAgentError):
    """A model update that cannot be applied: reject it, keep the active model."""


class IntegrityError(UpdateError):
    """Bytes that fail verification (signature, length, hash): reject them."""
