"""Every error peerctl raises on purpose.

Raise deep, catch once: the session boundary turns a speaker error into a state change and a log
line, the API middleware maps errors to HTTP statuses, and the CLI prints ``str(error)`` and exits 2.
``OrchestratorError`` is abstract: raise one of its subclasses.
"""

from __future__ import annotations

import enum


class OrchestratorError(Exception):
    """Base of all deliberate errors. Not raised directly."""

    def __new__(cls, *args: object, **kwargs: object) -> OrchestratorError:
        if cls is OrchestratorError:
            raise TypeError("OrchestratorError is abstract; raise a subclass")
        return super().__new__(cls)


class ConfigError(OrchestratorError):
    """A configuration problem, formatted as ``file:line: key.path: message``."""

    def __init__(self, file: str, key_path: str, message: str, line: int | None = None) -> None:
        self.file = file
        self.key_path = key_path
        self.message = message
        self.line = line
        where = f"{file}:{line}" if line is not None else file
        super().__init__(f"{where}: {key_path}: {message}" if key_path else f"{where}: {message}")


class ErrorAction(enum.Enum):
    """What the session does with a protocol error (RFC 7606 vocabulary)."""

    IGNORE = "ignore"
    TREAT_AS_WITHDRAW = "treat-as-withdraw"
    RESTART_SPEAKER = "restart-speaker"


class SpeakerProtocolError(OrchestratorError):
    """A speaker said something we cannot use; ``json_path`` names where."""

    def __init__(self, peer: str, json_path: str, message: str, action: ErrorAction = ErrorAction.IGNORE,
                 text: str = "") -> None:
        self.peer = peer
        self.json_path = json_path
        self.message = message
        self.action = action
        self.text = text
        super().__init__(f"{peer}: {json_path}: {message}")


class SpeakerExited(OrchestratorError):
    """A speaker process ended."""

    def __init__(self, peer: str, returncode: int | None) -> None:
        self.peer = peer
        self.returncode = returncode
        super().__init__(f"{peer}: speaker exited with code {returncode}")


class KernelInstallError(OrchestratorError):
    """The kernel refused a route (or the FIB cannot be used at all)."""

    def __init__(self, message: str, errno: int = 0, prefix: str = "") -> None:
        self.errno = errno
        self.prefix = prefix
        super().__init__(f"{prefix}: {message}" if prefix else message)


class PolicyError(OrchestratorError):
    """A policy refused an action (e.g. an announcement breaking a safety rule)."""

    def __init__(self, rule: str, message: str) -> None:
        self.rule = rule
        super().__init__(f"{rule}: {message}")


class ApiError(OrchestratorError):
    """A bad API request; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


class NotPermitted(OrchestratorError):
    """An operation needs a privilege (CAP_NET_ADMIN, root) we do not have."""
