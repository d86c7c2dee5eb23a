"""Errors a user can cause.

Every error that a user can trigger with bad input (a bad file, a wrong shape, an unsafe model format, an unknown
name) is a :class:`ModelsecError`. The CLI prints its message without a traceback and exits with code 2; anything
else is a bug and exits with code 1.
"""

from __future__ import annotations


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
