"""Built-in architectures, found by name through :data:`ARCHITECTURES`.

Each entry builds an ``nn.Module`` for a given input shape and number of classes. Modules take inputs in the data
set's bounds (``[0, 1]`` for the built-in data) and return logits.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import nn

from modelsec.errors import ConfigError
from modelsec.registry import Registry

ArchitectureBuilder = Callable[[tuple[int, ...], int], nn.Module]

ARCHITECTURES: Registry[ArchitectureBuilder] = Registry("architecture")


@ARCHITECTURES.register("small-cnn")
def small_cnn(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """conv32-conv64-fc128 CNN for small grayscale or colour images (``(C, H, W)``, H and W divisible by 4).

    The standard Fashion-MNIST/MNIST baseline of the robustness literature (about 421k parameters at 28x28x1):
    two 3x3 convolutions with ReLU and 2x2 max-pooling, then a 128-unit hidden layer.
    """
    if len(input_shape) != 3 or input_shape[1] % 4 or input_shape[2] % 4:
        raise ConfigError(
            f"small-cnn needs image inputs (C, H, W) with H and W divisible by 4, got {input_shape}; "
            "use --arch mlp for tabular data"
        )
    c, h, w = input_shape
    return nn.Sequential(
        nn.Conv2d(c, 32, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * (h // 4) * (w // 4), 128),
        nn.ReLU(),
        nn.Linear(128, num_classes),
    )


@ARCHITECTURES.register("mlp")
def mlp(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Two hidden layers of 256 and 128 ReLU units for tabular (or flattened) inputs of any shape."""
    features = math.prod(input_shape)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(features, 256),
        nn.ReLU(),
        nn.Linear(256, 128),
        nn.ReLU(),
        nn.Linear(128, num_classes),
    )


def build_architecture(name: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Instantiate the registered architecture ``name`` (randomly initialised with torch's current generator;
    callers that need reproducibility seed it through :func:`modelsec.seeding.seeded`)."""
    return ARCHITECTURES.get(name)(tuple(input_shape), int(num_classes))


def default_architecture(input_shape: tuple[int, ...]) -> str:
    """The built-in architecture that fits an input shape: images -> small-cnn, anything else -> mlp."""
    if len(input_shape) == 3 and input_shape[1] % 4 == 0 and input_shape[2] % 4 == 0:
        return "small-cnn"
    return "mlp"
