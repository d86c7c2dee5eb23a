"""The version of modelsec and the version stamp every result, checkpoint and model file records."""

from __future__ import annotations

import platform

__version__ = "0.1.0"


def versions() -> dict[str, str]:
    """The versions that decide a result's numbers: modelsec, torch, numpy, scikit-learn, Python, platform."""
    import numpy as np
    import sklearn
    import torch

    return {
        "modelsec": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }
