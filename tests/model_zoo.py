"""A zoo of small models from each framework that modelsec's adapters were not developed on (Keras functional and
sequential models, torch models exported to ONNX at several opsets, scikit-learn estimators, scoring callables), and
the same trained model written in every format modelsec reads (safetensors, ``.pt2``, ``.onnx``, ``.keras``).

A test helper (tests/test_adapter_zoo.py, tests/test_cross_format.py) that benchmarks/formats.py also uses. Every
builder is seeded; none trains unless it says so.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from modelsec.core.seeding import seeded
from modelsec.data.dataset import Dataset, Splits
from modelsec.models.card import ModelCard
from modelsec.models.torch import save_safetensors
from modelsec.models.zoo import build_architecture

# -- data -----------------------------------------------------------------------------------------------------------


def as_images(splits: Splits, shape: tuple[int, int, int]) -> Splits:
    """The same splits with every record reshaped to ``shape`` (channels first): digits' 64 features as 1x8x8."""

    def one(d: Dataset) -> Dataset:
        return Dataset(d.name, d.x.reshape(len(d), *shape), d.y, d.num_classes, d.bounds, d.class_names)

    return Splits(
        splits.source,
        splits.seed,
        one(splits.members),
        one(splits.nonmembers),
        one(splits.population),
        test=None if splits.test is None else one(splits.test),
    )


def rgb_splits(seed: int = 0, side: int = 8) -> Splits:
    """Synthetic 3-channel images ``(3, side, side)`` of 3 classes, class ``c`` brighter in channel ``c``."""
    rng = np.random.default_rng(seed)

    def one(n: int, name: str) -> Dataset:
        y = rng.integers(0, 3, n)
        x = rng.uniform(0.0, 0.5, (n, 3, side, side))
        x[np.arange(n), y] += 0.5
        return Dataset(name, x.astype(np.float32), y.astype(np.int64), 3, (0.0, 1.0))

    return Splits("rgb", seed, one(120, "members"), one(120, "nonmembers"), one(60, "population"))


# -- Keras ------------------------------------------------------------------------------------------------------------


def keras_zoo(keras: Any) -> dict[str, tuple[Callable[[], Any], str]]:
    """Keras models by name: a builder and the data set they take (``digits`` (64,), ``digits-images`` (1, 8, 8),
    ``rgb`` (3, 8, 8), ``breast-cancer`` (30,)). Built under ``keras.utils.set_random_seed`` by the caller."""
    layers = keras.layers

    def functional_cnn() -> Any:  # channels last, BatchNormalization, Dropout, MaxPooling2D, GlobalAveragePooling2D
        i = keras.Input((8, 8, 1))
        x = layers.Conv2D(4, 3, padding="same")(i)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.MaxPooling2D()(x)
        x = layers.Dropout(0.25)(x)
        x = layers.Conv2D(8, 3, padding="same", activation="relu")(x)
        x = layers.GlobalAveragePooling2D()(x)
        return keras.Model(i, layers.Dense(10)(x), name="functional_cnn")

    def softmax_output() -> Any:
        return keras.Sequential(
            [keras.Input((8, 8)), layers.Flatten(), layers.Dense(16, activation="relu"), layers.Dense(10, "softmax")]
        )

    def softmax_layer() -> Any:
        i = keras.Input((64,))
        x = layers.Dense(10)(layers.Dense(16, activation="relu")(i))
        return keras.Model(i, layers.Softmax()(x))

    def rescaling() -> Any:
        return keras.Sequential([keras.Input((8, 8, 1)), layers.Rescaling(1 / 255), layers.Flatten(), layers.Dense(10)])

    def normalization() -> Any:
        norm = layers.Normalization(mean=0.3, variance=0.09)
        return keras.Sequential([keras.Input((64,)), norm, layers.Dense(16, activation="tanh"), layers.Dense(10)])

    def rgb_cnn() -> Any:
        return keras.Sequential(
            [keras.Input((8, 8, 3)), layers.Conv2D(4, 3, activation="relu"), layers.Flatten(), layers.Dense(3)]
        )

    def sigmoid_binary() -> Any:
        return keras.Sequential(
            [keras.Input((30,)), layers.Dense(8, activation="relu"), layers.Dense(1, activation="sigmoid")]
        )

    def tabular() -> Any:
        return keras.Sequential([keras.Input((30,)), layers.Dense(16, activation="relu"), layers.Dense(2)])

    return {
        "functional-cnn": (functional_cnn, "digits-images"),
        "softmax-output": (softmax_output, "digits-images"),
        "softmax-layer": (softmax_layer, "digits"),
        "rescaling": (rescaling, "digits-images"),
        "normalization": (normalization, "digits"),
        "rgb-cnn": (rgb_cnn, "rgb"),
        "sigmoid-binary": (sigmoid_binary, "breast-cancer"),
        "tabular": (tabular, "breast-cancer"),
    }


def keras_refused(keras: Any) -> dict[str, tuple[Callable[[], Any], str]]:
    """Keras models modelsec refuses, by name: a builder and the start of the message that refuses it."""
    layers = keras.layers

    def two_inputs() -> Any:
        a, b = keras.Input((32,)), keras.Input((32,))
        return keras.Model([a, b], layers.Dense(10)(layers.Concatenate()([a, b])))

    def two_outputs() -> Any:
        a = keras.Input((64,))
        x = layers.Dense(8)(a)
        return keras.Model(a, [layers.Dense(10)(x), layers.Dense(2)(x)])

    def unbuilt() -> Any:
        return keras.Sequential([layers.Flatten(), layers.Dense(10)])

    return {
        "two-inputs": (two_inputs, "the Keras model has several inputs"),
        "two-outputs": (two_outputs, "the Keras model has 2 outputs"),
        "unbuilt-sequential": (unbuilt, "the Keras model's input shape is unknown: it was never built"),
    }


# -- torch models for ONNX --------------------------------------------------------------------------------------------


class ResidualNet(nn.Module):
    """A ResNet-style block on (1, 8, 8): conv, residual Add around conv-BN-ReLU-conv-BN, AdaptiveAvgPool(1)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.conv1, self.bn1 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return self.head(self.pool(torch.relu(x + y)).flatten(1))


class ReshapeHead(nn.Module):
    """A conv then ``reshape(n, -1)`` (exported through Shape/Gather/Concat with a dynamic batch) into a linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.head = nn.Linear(4 * 6 * 6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.head(y.reshape(y.shape[0], -1))


def _mlp(activation: nn.Module) -> nn.Module:
    return nn.Sequential(nn.Linear(64, 24), activation, nn.Linear(24, 10))


def onnx_zoo() -> dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]]:
    """Torch modules to export to ONNX, by name: a builder (seeded by the caller) and the per-record input shape."""
    return {
        "residual": (ResidualNet, (1, 8, 8)),
        "flatten": (lambda: nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 10)), (1, 8, 8)),
        "reshape": (ReshapeHead, (1, 8, 8)),
        "softmax": (lambda: nn.Sequential(nn.Linear(64, 10), nn.Softmax(dim=1)), (64,)),
        "leaky-relu": (lambda: _mlp(nn.LeakyReLU(0.1)), (64,)),
        "elu": (lambda: _mlp(nn.ELU()), (64,)),
        "gelu": (lambda: _mlp(nn.GELU()), (64,)),
        "gelu-tanh": (lambda: _mlp(nn.GELU(approximate="tanh")), (64,)),
        "selu": (lambda: _mlp(nn.SELU()), (64,)),
        "prelu": (lambda: _mlp(nn.PReLU()), (64,)),
        "hardswish": (lambda: _mlp(nn.Hardswish()), (64,)),
        "hardsigmoid": (lambda: _mlp(nn.Hardsigmoid()), (64,)),
        "layer-norm": (lambda: nn.Sequential(nn.Linear(64, 24), nn.LayerNorm(24), nn.ReLU(), nn.Linear(24, 10)), (64,)),
        "instance-norm": (
            lambda: nn.Sequential(
                nn.Conv2d(1, 4, 3), nn.InstanceNorm2d(4, affine=True), nn.Flatten(), nn.Linear(144, 10)
            ),
            (1, 8, 8),
        ),
    }


def randomise_batch_norm(module: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial eval statistics for every BatchNorm (freshly built ones are the identity), in eval mode."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 2 - 1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return module.eval()


def export_onnx(module: nn.Module, shape: tuple[int, ...], path: Path, *, opset: int, dynamic: bool) -> Path:
    """``torch.onnx.export(dynamo=False)`` (the TorchScript exporter most ONNX files in the wild come from) at
    ``opset``, with a symbolic batch axis or a fixed batch of 4."""
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (torch.zeros(2 if dynamic else 4, *shape),),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "n"}, "y": {0: "n"}} if dynamic else None,
        )
    return path


# -- one model in every format ----------------------------------------------------------------------------------------

FORMATS = ("safetensors", "pt2", "onnx", "keras")


def torch_to_keras(keras: Any, module: nn.Module, arch: str, input_shape: tuple[int, ...]) -> Any:
    """The Keras model equivalent to modelsec's built-in ``arch`` (``mlp`` or ``small-cnn``), its weights copied
    from ``module``: a Dense kernel is the torch weight transposed; a Conv2D kernel is (kh, kw, in, out) where torch
    holds (out, in, kh, kw); and the first Dense after Flatten takes the (H, W, C) flattening where torch flattens
    (C, H, W), so its rows are permuted accordingly."""
    layers = keras.layers
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    if arch == "mlp":
        model = keras.Sequential(
            [
                keras.Input(input_shape),
                layers.Flatten(),
                layers.Dense(256, "relu"),
                layers.Dense(128, "relu"),
                layers.Dense(linears[-1].out_features),
            ]
        )
    elif arch == "small-cnn":
        c, h, w = input_shape
        model = keras.Sequential(
            [
                keras.Input((h, w, c)),
                layers.Conv2D(32, 3, padding="same", activation="relu"),
                layers.MaxPooling2D(2),
                layers.Conv2D(64, 3, padding="same", activation="relu"),
                layers.MaxPooling2D(2),
                layers.Flatten(),
                layers.Dense(128, "relu"),
                layers.Dense(linears[-1].out_features),
            ]
        )
    else:
        raise ValueError(f"no Keras equivalent of {arch!r}")
    dense = [layer for layer in model.layers if type(layer).__name__ == "Dense"]
    conv2d = [layer for layer in model.layers if type(layer).__name__ == "Conv2D"]
    for layer, conv in zip(conv2d, convs, strict=True):
        layer.set_weights([conv.weight.detach().permute(2, 3, 1, 0).numpy(), conv.bias.detach().numpy()])
    for k, (layer, linear) in enumerate(zip(dense, linears, strict=True)):
        kernel = linear.weight.detach()
        if k == 0 and convs:  # (out, C*H*W) in torch's order -> (H*W*C, out) in Keras's
            c, h, w = convs[-1].out_channels, input_shape[1] // 4, input_shape[2] // 4  # after two 2x2 poolings
            kernel = kernel.reshape(-1, c, h, w).permute(2, 3, 1, 0).reshape(-1, kernel.shape[0])
        else:
            kernel = kernel.t()
        layer.set_weights([kernel.numpy(), linear.bias.detach().numpy()])
    return model


def write_all_formats(keras: Any, module: nn.Module, arch: str, splits: Splits, folder: Path) -> dict[str, Path]:
    """``module`` (modelsec's built-in ``arch``, trained on ``splits``) written as modelsec safetensors (with its
    card), a ``torch.export`` program (``.pt2``, symbolic batch), ONNX (TorchScript exporter, opset 17) and the
    equivalent Keras model (``.keras``)."""
    module.eval()
    shape = splits.input_shape
    folder.mkdir(parents=True, exist_ok=True)
    paths = {fmt: folder / f"model.{fmt}" for fmt in FORMATS}
    card = ModelCard(arch=arch, input_shape=shape, num_classes=splits.num_classes, bounds=splits.bounds)
    save_safetensors(module, paths["safetensors"], card.to_header())
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(module, (torch.zeros(2, *shape),), dynamic_shapes=({0: batch},))
    torch.export.save(program, paths["pt2"])
    export_onnx(module, shape, paths["onnx"], opset=17, dynamic=True)
    torch_to_keras(keras, module, arch, shape).save(paths["keras"])
    return paths


def trained(arch: str, splits: Splits, *, epochs: int, seed: int = 0) -> nn.Module:
    """modelsec's built-in ``arch`` trained on the members by modelsec's own training loop."""
    from modelsec.defenses.training import TrainingConfig, train_classifier

    with seeded(seed):
        module = build_architecture(arch, splits.input_shape, splits.num_classes)
    train_classifier(module, splits.members, config=TrainingConfig(epochs=epochs, batch_size=64, seed=seed))
    return module.eval()
