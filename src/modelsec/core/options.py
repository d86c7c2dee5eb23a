"""Checks of the options every workflow shares (seeds, the device, where outputs go), made before any work starts.

Each raises :class:`~modelsec.core.errors.ConfigError` with a message that says what to do, so a bad option fails in
a second rather than after a training run. The workflows (:func:`modelsec.audits.run_audit`, ``run_compare``,
``harden``, ``train_and_save``, ``run_dp_audit``; the first two check their checkpoint folder), the outputs layer
(:mod:`modelsec.outputs`, the folders it writes) and the config dataclasses call them, so the Python API is checked
like the command line. This module imports nothing heavy.

It also holds the markers of the one convention every config dataclass follows (:class:`AuditConfig
<modelsec.audits.runner.AuditConfig>`, :class:`~modelsec.defenses.training.TrainingConfig`, every
:class:`~modelsec.defenses.base.DefenseConfig`, :class:`~modelsec.audits.dp_audit.DPAuditOptions`), from which the
command line generates its options (:mod:`modelsec.cli.config_options`), so that a new field is a new option without
touching the CLI:

- the name: ``--l2-norm-clip`` for the field ``l2_norm_clip`` (a ``bool`` field is a flag: ``--no-checks`` for
  ``checks = True``, or ``--random-start/--no-random-start`` where the option is unset by default);
- the type and the default: the field's annotation and default (``int``, ``float``, ``str``, ``bool``, a tuple of
  ``float`` or ``str`` given comma-separated, any of them ``| None``);
- what the command line checks as it parses: a marker in an ``Annotated`` annotation, :class:`OneOf` for choices
  and :class:`Within` for an integer range (:data:`COUNT`, :data:`SEED`, :data:`SPLIT_SEED`); the dataclass's own
  validation (``__post_init__``) checks every value again, for the Python API;
- the help: the field's entry in the ``Args:`` section of the class docstring (or of a base class's, for an
  inherited field); an entry may document several fields (``pgd_steps, pgd_restarts: ...``).
"""

from __future__ import annotations

import contextlib
import operator
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from modelsec.core.errors import ConfigError, printable

SEED_LIMIT = 2**63
"""Seeds are integers in ``[0, 2**63)``: what numpy's ``default_rng``, a ``torch.Generator`` and the run store's
SQLite ``INTEGER`` column all hold."""

SPLIT_SEED_LIMIT = 2**32
"""Split seeds are integers in ``[0, 2**32)``: scikit-learn's ``random_state`` draws the stratified split."""


@dataclass(frozen=True, init=False)
class OneOf:
    """``Annotated[str, OneOf("linf", "l2")]``: the command line offers these values, in this order, and refuses
    others as it parses."""

    choices: tuple[str, ...]

    def __init__(self, *choices: str) -> None:
        object.__setattr__(self, "choices", choices)


@dataclass(frozen=True)
class Within:
    """``Annotated[int, Within(1)]``: an integer the command line checks to lie in ``[low, high]`` as it parses
    (``None``: unbounded)."""

    low: int | None = None
    high: int | None = None


COUNT = Within(1)
"""A count: at least 1."""
SEED = Within(0, SEED_LIMIT - 1)
SPLIT_SEED = Within(0, SPLIT_SEED_LIMIT - 1)

_DEVICE = re.compile(r"cpu|cuda(:\d+)?")


def check_seed(seed: object, option: str = "--seed", *, limit: int = SEED_LIMIT) -> int:
    """``seed`` as an ``int`` if it is an integer in ``[0, limit)`` (a bool is not a seed); else ConfigError.

    >>> check_seed(7)
    7
    >>> check_seed(-1)
    Traceback (most recent call last):
    ...
    modelsec.core.errors.ConfigError: --seed must be an integer from 0 to 2**63 - 1, got -1
    """
    bound = f"2**{limit.bit_length() - 1} - 1" if limit & (limit - 1) == 0 else str(limit - 1)
    try:
        if isinstance(seed, bool):
            raise TypeError
        value = operator.index(seed)  # type: ignore[arg-type]
    except TypeError:
        raise ConfigError(f"{option} must be an integer from 0 to {bound}, got {seed!r}") from None
    if not 0 <= value < limit:
        raise ConfigError(f"{option} must be an integer from 0 to {bound}, got {value}")
    return value


def check_device(device: str) -> str:
    """``device`` if it names a device modelsec runs on (``cpu``, ``cuda``, ``cuda:N``) that is present."""
    if not isinstance(device, str) or not _DEVICE.fullmatch(device):
        raise ConfigError(f"--device must be cpu, cuda or cuda:N, got {printable(repr(device))}")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device} was asked for but no CUDA device is available")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ConfigError(f"--device {device}: there are only {torch.cuda.device_count()} CUDA device(s)")
    return device


def check_writable_folder(folder: str | os.PathLike[str], option: str = "--out") -> None:
    """Make sure files can be written into ``folder`` (created if missing), before any work starts.

    The folder and any missing parents are created, a probe file is written and removed, and the folders this
    check created are removed again: a run that later stops on another error leaves nothing behind. A path
    under a file, an existing file, a read-only file system or a folder without write permission is a
    :class:`ConfigError` naming the path and the reason.
    """
    path = Path(folder).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {printable(str(path))} is a file, not a folder; give a folder")
    reason = _cannot_write_into(path)
    if reason:
        raise ConfigError(
            f"{option} {printable(str(path))}: cannot write there ({reason}); choose a folder you can write to"
        )


def check_writable_file(file: str | os.PathLike[str], option: str = "--out") -> None:
    """Make sure ``file`` can be written: the path is not a folder, and its folder exists or can be created and
    is writable (as :func:`check_writable_folder` checks it). ``file`` itself is not created."""
    path = Path(file).expanduser()
    if path.is_dir():
        raise ConfigError(f"{option} {printable(str(path))} is a folder; give the path of a file")
    reason = _cannot_write_into(path.parent)
    if reason:
        raise ConfigError(
            f"{option} {printable(str(path))}: cannot write into its folder {printable(str(path.parent))} "
            f"({reason}); choose a path you can write to"
        )


def _cannot_write_into(folder: Path) -> str | None:
    """Why no file can be created in ``folder`` (after creating it and its missing parents), or ``None`` when
    one can; the folders created for the probe are removed again."""
    created: list[Path] = []
    try:
        for part in reversed([folder, *folder.parents]):
            if not part.exists():
                part.mkdir()
                created.append(part)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".modelsec-write-check-"):
            pass
    except (NotADirectoryError, FileExistsError):
        return "a part of the path is a file"
    except OSError as e:
        return printable(e.strerror or e)
    finally:
        for made in reversed(created):
            with contextlib.suppress(OSError):
                made.rmdir()
    return None
