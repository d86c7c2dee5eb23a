"""Errors a user can cause.

Every error that a user can trigger with bad input (a bad file, a wrong shape, an unsafe model format, an unknown
name) is a :class:`ModelsecError`. The CLI prints its message without a traceback and exits with code 2; anything
else is a bug and exits with code 1.
"""

from __future__ import annotations

import re


class ModelsecError(Exception):
    """Base class of every error caused by user input. The message says what to do."""


class DataError(ModelsecError):
    """Bad data: unreadable file, wrong shape or dtype, NaN/Inf, out-of-bounds values, bad labels."""


class ModelLoadError(ModelsecError):
    """A model file that cannot be read, or does not match the declared architecture."""


class UnsafeModelError(ModelLoadError):
    """A model file whose format can run code when loaded (pickle) and that was not explicitly trusted."""


class ConfigError(ModelsecError):
    """An invalid option or hyper-parameter, or an unknown name in a registry."""


class StoreError(ModelsecError):
    """The run store cannot be opened, or a run id is unknown."""


# ANSI escape sequences: CSI (colours, cursor moves), OSC (window titles, hyperlinks; ended by BEL or ST), and
# the two-character escapes; then every other C0 / C1 control character and DEL.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]?|\x9b[0-?]*[ -/]*[@-~]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\s]+")


def printable(text: object, max_chars: int | None = 300) -> str:
    """Text from elsewhere (a foreign exception, a file name, a file's contents) made safe to put in a message:
    ANSI escape sequences removed, other control characters (newlines included) and runs of spaces turned into one
    space, and at most ``max_chars`` characters (``None``: no limit), an ellipsis marking a cut.

    >>> printable("\\x1b[1mdo this\\x1b[0m only\\nif you trust it")
    'do this only if you trust it'
    >>> printable("x" * 10, max_chars=5)
    'xxxx…'
    """
    cleaned = _CONTROL.sub(" ", _ANSI.sub("", str(text))).strip()
    if max_chars is not None and len(cleaned) > max_chars:
        cleaned = cleaned[: max_chars - 1].rstrip() + "…"
    return cleaned
