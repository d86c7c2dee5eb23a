"""Built-in architectures, found by name through :data:`ARCHITECTURES`.

Each entry builds an ``nn.Module`` for a given input shape and number of classes. Modules take inputs in the data
set's bounds (``[0, 1]`` for the built-in data) and return logits.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import nn

from modelsec.core.errors import ConfigError
from modelsec.core.registry import Registry

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


@ARCHITECTURES.register("dp-cnn")
def dp_cnn(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The small tanh CNN of the differential-privacy literature, for DP-SGD on MNIST-sized images (about 26k
    parameters at 28x28x1).

    Papernot et al. 2021 ("Tempered Sigmoid Activations for Deep Learning with Differential Privacy") and Tramer &
    Boneh 2021 ("Differentially Private Learning Needs Better Features") train it end to end with DP-SGD:
    conv 16@8x8 stride 2 (padding 2), 2x2 max-pooling stride 1, conv 32@4x4 stride 2, 2x2 max-pooling stride 1,
    a 32-unit hidden layer, all with tanh. Bounded activations keep per-sample gradients small, so fewer are clipped;
    both papers report several points of accuracy gained over ReLU at the same privacy budget (86.0% on
    Fashion-MNIST at epsilon 2.93 in Tramer & Boneh's Table 1). Needs inputs of at least 16x16.
    """
    if len(input_shape) != 3 or min(input_shape[1], input_shape[2]) < 16:
        raise ConfigError(f"dp-cnn needs image inputs (C, H, W) of at least 16x16, got {input_shape}")
    c, h, w = input_shape

    def conv_out(n: int, kernel: int, stride: int, padding: int) -> int:
        return (n + 2 * padding - kernel) // stride + 1

    h1, w1 = conv_out(h, 8, 2, 2) - 1, conv_out(w, 8, 2, 2) - 1  # conv, then 2x2 pooling at stride 1
    h2, w2 = conv_out(h1, 4, 2, 0) - 1, conv_out(w1, 4, 2, 0) - 1
    return nn.Sequential(
        nn.Conv2d(c, 16, kernel_size=8, stride=2, padding=2),
        nn.Tanh(),
        nn.MaxPool2d(2, stride=1),
        nn.Conv2d(16, 32, kernel_size=4, stride=2),
        nn.Tanh(),
        nn.MaxPool2d(2, stride=1),
        nn.Flatten(),
        nn.Linear(32 * h2 * w2, 32),
        nn.Tanh(),
        nn.Linear(32, num_classes),
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
    callers that need reproducibility seed it through :func:`modelsec.core.seeding.seeded`)."""
    return ARCHITECTURES.get(name)(tuple(input_shape), int(num_classes))


def default_architecture(input_shape: tuple[int, ...]) -> str:
    """The built-in architecture that fits an input shape: images -> small-cnn, anything else -> mlp."""
    if len(input_shape) == 3 and input_shape[1] % 4 == 0 and input_shape[2] % 4 == 0:
        return "small-cnn"
    return "mlp"
