"""Build and train the mission's Keras model, as a user outside modelsec would, for the demo.

The model is the one of the mission's example (a TensorFlow Privacy tutorial shape):
``Sequential([Input((28, 28)), Flatten(), Dense(128, relu), Dense(10)])`` producing logits, trained with
``SparseCategoricalCrossentropy(from_logits=True)``. It runs on Keras 3's torch backend (no TensorFlow) and is
saved as a ``.keras`` archive, with the exact records it trained on (``members.npz``) and records it never saw
(``nonmembers.npz``), so that ``modelsec audit --model model.keras --members members.npz --nonmembers
nonmembers.npz`` audits it with its own training split.

Usage: ``python scripts/mission_keras_model.py OUT_DIR [--train N] [--epochs E] [--seed S]``
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--train", type=int, default=2000, help="training records (default 2000)")
    parser.add_argument("--heldout", type=int, default=2000, help="held-out records written (default 2000)")
    parser.add_argument("--epochs", type=int, default=20, help="epochs (default 20)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    os.environ["KERAS_BACKEND"] = "torch"
    import keras

    from modelsec.data.fashion_mnist import read_raw

    keras.utils.set_random_seed(args.seed)
    raw = read_raw()
    rng = np.random.default_rng(args.seed)
    train = rng.permutation(len(raw.train_labels))[: args.train]
    heldout = rng.permutation(len(raw.test_labels))[: args.heldout]
    x_train = raw.train_images[train].astype(np.float32) / 255.0  # (n, 28, 28): the model's own layout
    y_train = raw.train_labels[train].astype(np.int64)
    x_test = raw.test_images[heldout].astype(np.float32) / 255.0
    y_test = raw.test_labels[heldout].astype(np.int64)

    model = keras.Sequential(
        [
            keras.Input((28, 28)),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10),
        ],
        name="mission_mlp",
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=64, verbose=0, shuffle=True)
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)

    args.out.mkdir(parents=True, exist_ok=True)
    model.save(args.out / "model.keras")
    # modelsec's layout: channels first, (n, 1, 28, 28)
    np.savez(args.out / "members.npz", x=x_train[:, None], y=y_train)
    np.savez(args.out / "nonmembers.npz", x=x_test[:, None], y=y_test)
    print(f"trained the mission's Keras MLP on {args.train} records: held-out accuracy {accuracy:.3f}")
    print(f"wrote {args.out / 'model.keras'}, members.npz, nonmembers.npz")


if __name__ == "__main__":
    main()
