"""Running ``modelsec`` in tests: in this process through the entry point (:func:`modelsec.cli.main.main`: the same
exit codes and messages as the command, without a new interpreter's start-up of several seconds), or in a new
process where the test needs a real one (the installed entry point, signals, a process that dies)."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import warnings


def modelsec(*args: str) -> subprocess.CompletedProcess[str]:
    """``modelsec ARGS`` in this process: its exit code (a ``SystemExit`` caught; 0 when ``main`` returns) and what
    it printed on stdout and stderr."""
    from modelsec.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    showwarning = warnings.showwarning  # main() replaces it
    code: int | str | None = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main(list(args))
    except SystemExit as e:
        code = e.code
    finally:
        warnings.showwarning = showwarning
    returncode = code if isinstance(code, int) else (0 if code is None else 1)
    return subprocess.CompletedProcess(["modelsec", *args], returncode, out.getvalue(), err.getvalue())


def modelsec_process(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m modelsec ARGS`` in a new process (this one's environment)."""
    return subprocess.run(
        [sys.executable, "-m", "modelsec", *args], capture_output=True, text=True, env=os.environ.copy(), timeout=300
    )


def assert_user_error(proc: subprocess.CompletedProcess[str], message: str) -> None:
    """A user error: exit code 2, ``message`` on stderr, no traceback."""
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
