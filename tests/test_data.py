"""Tests of modelsec.data: the IDX parser, the built-in sets, user files, validation and the splits."""

from __future__ import annotations

import gzip
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest

from modelsec.core.errors import ConfigError, DataError
from modelsec.data import (
    DATASETS,
    SplitOverlapWarning,
    available_datasets,
    load_dataset,
    load_splits,
    validate_arrays,
)
from modelsec.data.dataset import Dataset, Splits
from modelsec.data.fashion_mnist import (
    CLASS_NAMES,
    ENV_VAR,
    fashion_mnist_splits,
    read_idx,
    read_raw,
    resolve_dir,
)
from modelsec.data.files import file_splits, load_file
from modelsec.data.sklearn_sets import breast_cancer_dataset, digits_dataset

REAL_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(
    not (REAL_FASHION_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST not installed at /usr/share/datasets/fashion-mnist (apt-get install dataset-fashion-mnist)",
)
UNIT = (0.0, 1.0)


# --------------------------------------------------------------------------------------- helpers


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of ``uint8`` values, written the way the format describes it."""
    assert array.dtype == np.uint8
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.tobytes()


def write_fashion_folder(
    folder: Path, n_train: int = 60, n_test: int = 10, compress: bool = True
) -> dict[str, np.ndarray]:
    """A miniature Fashion-MNIST folder of random 28x28 images (every class present)."""
    rng = np.random.default_rng(123)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for stem, arr in arrays.items():
        data = idx_bytes(arr)
        if compress:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / stem).write_bytes(data)
    return arrays


def all_hashes(splits: Splits) -> list[bytes]:
    return splits.members.record_hashes() + splits.nonmembers.record_hashes() + splits.population.record_hashes()


def toy_arrays(n: int = 40, classes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Distinct records in [0, 1] of shape (n, 2, 3), balanced labels."""
    rng = np.random.default_rng(7)
    x = rng.random((n, 2, 3))
    y = np.arange(n) % classes
    return x, y


# ------------------------------------------------------------------------------------ IDX parser


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_round_trip(tmp_path: Path, compress: bool) -> None:
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    labels = np.array([3, 1], dtype=np.uint8)
    for name, arr in (("img", images), ("lab", labels)):
        data = idx_bytes(arr)
        (tmp_path / name).write_bytes(gzip.compress(data) if compress else data)
    got_images = read_idx(tmp_path / "img", magic=2051)
    got_labels = read_idx(tmp_path / "lab", magic=2049)
    assert got_images.dtype == np.uint8 and got_images.shape == (2, 3, 4)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


def test_read_idx_big_endian_int32(tmp_path: Path) -> None:
    values = np.array([1, -2, 70000], dtype=np.int32)
    data = struct.pack(">BBBBI", 0, 0, 0x0C, 1, 3) + values.astype(">i4").tobytes()
    (tmp_path / "ints").write_bytes(data)
    np.testing.assert_array_equal(read_idx(tmp_path / "ints"), values)


def test_read_idx_truncated(tmp_path: Path) -> None:
    data = idx_bytes(np.zeros((5, 28, 28), dtype=np.uint8))
    (tmp_path / "short").write_bytes(data[:-100])
    with pytest.raises(DataError, match=r"truncated.*reinstall `dataset-fashion-mnist`"):
        read_idx(tmp_path / "short", magic=2051)
    (tmp_path / "long").write_bytes(data + b"\0")
    with pytest.raises(DataError, match="trailing bytes"):
        read_idx(tmp_path / "long", magic=2051)


def test_read_idx_truncated_gzip(tmp_path: Path) -> None:
    compressed = gzip.compress(idx_bytes(np.ones((5, 28, 28), dtype=np.uint8)))
    (tmp_path / "cut.gz").write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(DataError, match="cannot read or decompress"):
        read_idx(tmp_path / "cut.gz")


def test_read_idx_wrong_magic(tmp_path: Path) -> None:
    (tmp_path / "labels").write_bytes(idx_bytes(np.zeros(4, dtype=np.uint8)))
    with pytest.raises(DataError, match="magic number is 2049, expected 2051"):
        read_idx(tmp_path / "labels", magic=2051)
    (tmp_path / "text").write_bytes(b"hello, world\n")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(tmp_path / "text")


# ------------------------------------------------------------------ Fashion-MNIST (synthetic folder)


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_loader_on_synthetic_folder(tmp_path: Path, compress: bool) -> None:
    arrays = write_fashion_folder(tmp_path / "fm", compress=compress)
    splits = fashion_mnist_splits(seed=3, data_dir=str(tmp_path / "fm"))
    order = np.random.default_rng(3).permutation(60)
    train_x = arrays["train-images-idx3-ubyte"].astype(np.float32) / 255
    train_y = arrays["train-labels-idx1-ubyte"]
    # population: first sixth of the permutation; members: the rest, in permutation order
    np.testing.assert_array_equal(splits.population.y, train_y[order[:10]])
    np.testing.assert_array_equal(splits.members.y, train_y[order[10:]])
    np.testing.assert_array_equal(splits.members.x[:, 0], train_x[order[10:]])
    np.testing.assert_array_equal(splits.nonmembers.y, arrays["t10k-labels-idx1-ubyte"])
    assert splits.members.x.shape == (50, 1, 28, 28)
    assert splits.members.name == "fashion-mnist/members"
    assert splits.nonmembers.class_names == CLASS_NAMES


def test_fashion_folder_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_fashion_folder(tmp_path / "from_env")
    write_fashion_folder(tmp_path / "explicit")
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "from_env"))
    assert resolve_dir() == tmp_path / "from_env"
    assert resolve_dir(tmp_path / "explicit") == tmp_path / "explicit"
    monkeypatch.delenv(ENV_VAR)
    if REAL_FASHION_DIR.is_dir():
        assert resolve_dir() == REAL_FASHION_DIR
    else:
        with pytest.raises(DataError, match="from the default location"):
            resolve_dir()
    with pytest.raises(DataError, match=r"apt-get install dataset-fashion-mnist.*--data-dir"):
        resolve_dir(tmp_path / "absent")
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "absent"))
    with pytest.raises(DataError, match=rf"from \${ENV_VAR}"):
        load_splits("fashion-mnist")


def test_fashion_folder_missing_or_inconsistent_files(tmp_path: Path) -> None:
    folder = tmp_path / "fm"
    write_fashion_folder(folder)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"has no t10k-labels-idx1-ubyte\.gz"):
        read_raw(folder)
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(9, dtype=np.uint8))))
    with pytest.raises(DataError, match="10 test images but 9 test labels"):
        read_raw(folder)


def test_fashion_raw_arrays_cached_and_read_only(tmp_path: Path) -> None:
    write_fashion_folder(tmp_path / "fm")
    first, second = read_raw(tmp_path / "fm"), read_raw(tmp_path / "fm")
    assert first is second
    assert not first.train_images.flags.writeable


# --------------------------------------------------------------------- Fashion-MNIST (real data)


@pytest.fixture(scope="module")
def fashion_seed0() -> Splits:
    with warnings.catch_warnings():
        warnings.simplefilter("error", SplitOverlapWarning)
        return load_splits("fashion-mnist", seed=0, data_dir=str(REAL_FASHION_DIR))


@needs_fashion
def test_real_fashion_mnist_splits(fashion_seed0: Splits) -> None:
    s = fashion_seed0
    assert (len(s.members), len(s.nonmembers), len(s.population)) == (50_000, 10_000, 10_000)
    assert s.source == "fashion-mnist" and s.seed == 0
    assert s.members.name == "fashion-mnist/members"
    for part in (s.members, s.nonmembers, s.population):
        assert part.x.dtype == np.float32 and part.y.dtype == np.int64
        assert part.input_shape == (1, 28, 28)
        assert part.x.min() >= 0.0 and part.x.max() <= 1.0
        assert part.num_classes == 10 and part.class_names == CLASS_NAMES
    assert s.nonmembers.x.max() == 1.0  # pixel 255 maps to exactly 1
    # the 10,000 test images, in file order (the first test label is 9, "Ankle boot")
    assert s.nonmembers.y[0] == 9
    np.testing.assert_array_equal(np.bincount(s.nonmembers.y), np.full(10, 1000))
    # members + population are exactly the 60,000 training images (6,000 per class)
    counts = np.bincount(s.members.y, minlength=10) + np.bincount(s.population.y, minlength=10)
    np.testing.assert_array_equal(counts, np.full(10, 6000))
    assert s.overlaps() == {
        "members/nonmembers": 0,
        "members/population": 0,
        "nonmembers/population": 0,
    }


@needs_fashion
def test_real_fashion_mnist_split_depends_on_seed_only(fashion_seed0: Splits) -> None:
    again = fashion_mnist_splits(seed=0, data_dir=str(REAL_FASHION_DIR))
    other = fashion_mnist_splits(seed=1, data_dir=str(REAL_FASHION_DIR))
    assert again.members.sha256() == fashion_seed0.members.sha256()
    assert again.population.sha256() == fashion_seed0.population.sha256()
    assert other.members.sha256() != fashion_seed0.members.sha256()
    assert other.population.sha256() != fashion_seed0.population.sha256()
    assert other.nonmembers.sha256() == fashion_seed0.nonmembers.sha256()  # always the test set


# ----------------------------------------------------------------------------- scikit-learn sets


def test_digits() -> None:
    d = digits_dataset()
    assert d.x.shape == (1797, 64) and d.x.dtype == np.float32
    assert d.x.min() == 0.0 and d.x.max() == 1.0
    assert d.num_classes == 10 and d.bounds == UNIT
    assert np.all(np.isin(d.x * 16, np.arange(17)))  # pixel/16 exactly


def test_breast_cancer() -> None:
    d = breast_cancer_dataset()
    assert d.x.shape == (569, 30) and d.x.dtype == np.float32
    np.testing.assert_array_equal(d.x.min(axis=0), np.zeros(30))  # per-feature min-max
    np.testing.assert_array_equal(d.x.max(axis=0), np.ones(30))
    assert d.class_names == ("malignant", "benign")


@pytest.mark.parametrize("name", ["digits", "breast-cancer"])
def test_sklearn_splits_stratified_and_seeded(name: str) -> None:
    full = load_dataset(name)
    s = load_splits(name, seed=5)
    n = len(full)
    assert len(s.members) in (n // 2, n - n // 2)
    assert abs(len(s.nonmembers) - len(s.population)) <= 1
    assert s.members.name == f"{name}/members" and s.source == name
    # together the splits are exactly the whole set, with no record twice
    assert sorted(all_hashes(s)) == sorted(full.record_hashes())
    assert all(v == 0 for v in s.overlaps().values())
    # every class keeps its share in every split (to within one record of the exact fraction)
    total = np.bincount(full.y)
    for part, frac in ((s.members, 0.5), (s.nonmembers, 0.25), (s.population, 0.25)):
        assert np.all(np.abs(np.bincount(part.y, minlength=len(total)) - frac * total) <= 1.5)
    assert load_splits(name, seed=5).members.sha256() == s.members.sha256()
    assert load_splits(name, seed=6).members.sha256() != s.members.sha256()


def test_registry_and_available_names() -> None:
    assert available_datasets() == ["breast-cancer", "digits", "fashion-mnist"]
    assert "Digits" in DATASETS
    splits = DATASETS.get("digits")(seed=0)
    assert isinstance(splits, Splits) and splits.source == "digits"


def test_builtin_sets_refuse_file_options() -> None:
    with pytest.raises(ConfigError, match="fixed bounds"):
        load_splits("digits", bounds=(0.0, 255.0))
    assert load_splits("digits", bounds=(0.0, 1.0)).bounds == UNIT
    with pytest.raises(ConfigError, match="--label-column applies to CSV files only"):
        load_splits("digits", label_column="target")
    with pytest.raises(ConfigError, match=r"split seed must be an integer from 0 to 2\*\*32 - 1"):
        load_splits("digits", seed=-1)


# ------------------------------------------------------------------------------------ user files


def test_npz_round_trip_detected_by_content(tmp_path: Path) -> None:
    x, y = toy_arrays()
    path = tmp_path / "data.bin"  # no .npz extension: detected from the zip magic
    with path.open("wb") as fh:
        np.savez(fh, x=x, y=y)
    full = load_dataset(str(path))
    assert full.x.dtype == np.float32 and full.input_shape == (2, 3)
    np.testing.assert_array_equal(full.x, x.astype(np.float32))
    np.testing.assert_array_equal(full.y, y)
    s = load_splits(str(path), seed=1)
    assert s.source == str(path) and s.members.name == f"{path}/members"
    assert (len(s.members), len(s.nonmembers), len(s.population)) == (20, 10, 10)
    assert sorted(all_hashes(s)) == sorted(full.record_hashes())


def test_npz_class_names_and_bounds(tmp_path: Path) -> None:
    x, y = toy_arrays(classes=2)
    path = tmp_path / "d.npz"
    np.savez(path, x=x * 255, y=y, class_names=np.array(["cat", "dog"]))
    with pytest.raises(DataError, match=r"--bounds LO,HI \(here e\.g\. --bounds 0,2\d\d"):
        load_file(path)
    d = load_file(path, bounds=(0.0, 255.0))
    assert d.class_names == ("cat", "dog") and d.num_classes == 2 and d.bounds == (0.0, 255.0)


def test_npz_object_array_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.npz"
    np.savez(path, x=np.array([[0.1, 0.2], [0.3, 0.4]], dtype=object), y=np.array([0, 1]))
    with pytest.raises(DataError, match="pickled arrays are refused"):
        load_file(path)


def test_npz_missing_arrays(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, inputs=np.zeros((4, 2)), y=np.arange(4) % 2)
    with pytest.raises(DataError, match=r"has arrays \['inputs', 'y'\] but needs 'x'"):
        load_file(path)
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04" + b"\0" * 40)
    with pytest.raises(DataError, match=r"not a readable \.npz archive"):
        load_file(tmp_path / "broken.npz")


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    lines = [",".join(header)] + [",".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")


def test_csv_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = np.round(rng.random((24, 3)), 4)
    y = np.arange(24) % 3
    path = tmp_path / "table.dat"  # no .csv extension: detected as text
    write_csv(path, ["a", "target", "b", "c"], [[r[0], int(c), r[1], r[2]] for r, c in zip(x, y, strict=True)])
    d = load_file(path, label_column="target")
    assert d.x.shape == (24, 3) and d.num_classes == 3
    np.testing.assert_allclose(d.x, x.astype(np.float32))
    np.testing.assert_array_equal(d.y, y)
    s = file_splits(path, seed=2, label_column="target")
    assert (len(s.members), len(s.nonmembers), len(s.population)) == (12, 6, 6)
    with pytest.raises(DataError, match=r"no label column 'label'; the columns are \['a', 'target'"):
        load_file(path)


def test_csv_text_labels_become_class_names(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    write_csv(path, ["f", "label"], [[i / 10, "dog" if i % 2 else "cat"] for i in range(8)])
    d = load_file(path)
    assert d.class_names == ("cat", "dog")
    np.testing.assert_array_equal(d.y, np.arange(8) % 2)


def test_csv_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    write_csv(path, ["f", "label"], [[0.1, 0], ["high", 1]])
    with pytest.raises(DataError, match=r"non-numeric value 'high' in column 'f' on line 3"):
        load_file(path)
    write_csv(path, ["f", "label"], [[0.1, 0], [0.2]])
    with pytest.raises(DataError, match="line 3 has 1 fields but the header has 2"):
        load_file(path)
    write_csv(path, ["f", "label"], [[0.1, 0], [0.2, 1.5]])
    with pytest.raises(DataError, match="not whole numbers"):
        load_file(path)
    path.write_bytes(b"\xff\xfe\x00binary\x9c")
    with pytest.raises(DataError, match=r"neither a \.npz archive nor a UTF-8 text CSV"):
        load_file(path)


def test_missing_file_and_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no such file"):
        load_file(tmp_path / "nope.csv")
    with pytest.raises(DataError, match=r"unknown data set 'nope\.csv'.*\(breast-cancer, digits, fashion-mnist\)"):
        load_splits("nope.csv")
    with pytest.raises(DataError, match="is a folder but not an image folder"):
        load_splits(str(tmp_path))


def test_duplicated_records_warn_not_raise(tmp_path: Path) -> None:
    x, y = toy_arrays(n=40, classes=2)
    x[1::2] = x[0::2]  # every record twice, with the same label
    y = (np.arange(40) // 2) % 2
    path = tmp_path / "dups.npz"
    np.savez(path, x=x, y=y)
    with pytest.warns(SplitOverlapWarning, match=r"share records with identical inputs"):
        splits = load_splits(str(path))
    assert sum(splits.overlaps().values()) > 0


def test_too_few_records_per_class(tmp_path: Path) -> None:
    x, y = toy_arrays(n=12, classes=2)
    y[0] = 2  # class 2 has a single record
    path = tmp_path / "rare.npz"
    np.savez(path, x=x, y=y)
    with pytest.raises(DataError, match=r"class 2: 1.*at least 4 records"):
        load_splits(str(path))


# ------------------------------------------------------------------------------------ validation


def test_validate_arrays_converts() -> None:
    x = np.array([[0, 1], [1, 0]], dtype=np.uint8)
    y = np.array([1.0, 0.0])  # integer-valued floats are fine
    xv, yv, k = validate_arrays(x, y, bounds=UNIT, name="t")
    assert xv.dtype == np.float32 and xv.flags.c_contiguous and yv.dtype == np.int64 and k == 2
    _, _, k5 = validate_arrays(x, y, bounds=UNIT, num_classes=5, name="t")
    assert k5 == 5


def test_validate_arrays_never_mutates_or_aliases() -> None:
    x = np.asfortranarray(np.full((4, 3), 0.5, dtype=np.float32))
    y = np.array([0, 1, 0, 1], dtype=np.int64)
    x_before, y_before = x.copy(), y.copy()
    xv, yv, _ = validate_arrays(x, y, bounds=UNIT, name="t")
    xv[:] = 0.0
    yv[:] = 7
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(y, y_before)
    assert not np.shares_memory(xv, x) and not np.shares_memory(yv, y)
    # a failing validation leaves the input alone too
    bad = np.array([[np.nan, 0.5], [0.2, 0.3]])
    with pytest.raises(DataError):
        validate_arrays(bad, [0, 1], bounds=UNIT, name="t")
    assert np.isnan(bad[0, 0]) and bad[1, 1] == 0.3


OK_X = np.full((4, 2), 0.5)
OK_Y = np.array([0, 1, 0, 1])


@pytest.mark.parametrize(
    ("x", "y", "num_classes", "match"),
    [
        (np.zeros((0, 3)), np.zeros(0, dtype=int), None, r"is empty.*provide at least"),
        (OK_X.astype(object), OK_Y, None, r"x has dtype object, not numbers; convert"),
        (np.array([["a", "b"]] * 4), OK_Y, None, r"x has dtype <U1, not numbers"),
        (OK_X, np.array([0, 1.5, 0, 1]), None, r"1 label\(s\) are not whole numbers.*record 1"),
        (OK_X, np.array(["a", "b", "a", "b"]), None, r"not integer class indices; map"),
        (np.full(4, 0.5), OK_Y, None, r"x has shape \(4,\) but needs \(n_records.*reshape"),
        (OK_X, np.array([0, 1, 0]), None, r"x has 4 records but y has 3 labels"),
        (OK_X, np.eye(4, 2), None, r"y has shape \(4, 2\) but must be 1-D.*argmax"),
        (OK_X, OK_Y[:, None], None, r"must be 1-D; flatten it with y\.ravel\(\)"),
        (
            np.array([[0.1, 0.2], [0.3, np.nan], [np.inf, np.nan], [0.1, 0.1]]),
            OK_Y,
            None,
            r"3 NaN/Inf value\(s\).*first in record 1; remove or impute",
        ),
        (OK_X * 300, OK_Y, None, r"span \[150, 150\].*bounds are \[0, 1\].*--bounds 0,150"),
        (OK_X - 1, OK_Y, None, r"span \[-0\.5, -0\.5\].*--bounds -0\.5,1\)"),
        (OK_X, np.array([0, -1, 0, 1]), None, r"1 negative label\(s\) \(smallest -1\)"),
        (OK_X, np.array([0, 1, 0, 3]), 3, r"labels go up to 3 but there are 3 classes"),
        (OK_X, np.array([2, 2, 2, 2]), None, r"only one class \(label 2\).*at least two classes"),
    ],
)
def test_validate_arrays_errors(x: np.ndarray, y: np.ndarray, num_classes: int | None, match: str) -> None:
    with pytest.raises(DataError, match=match):
        validate_arrays(x, y, bounds=UNIT, num_classes=num_classes, name="toy")
    with pytest.raises(DataError, match=r"^toy"):  # names the data set
        validate_arrays(x, y, bounds=UNIT, num_classes=num_classes, name="toy")


def test_validate_arrays_rejects_bad_bounds() -> None:
    with pytest.raises(ConfigError, match="LO < HI"):
        validate_arrays(OK_X, OK_Y, bounds=(1.0, 0.0), name="t")
    with pytest.raises(ConfigError, match="LO < HI"):
        validate_arrays(OK_X, OK_Y, bounds=(0.0, float("inf")), name="t")


def test_dataset_round_trips_through_validation() -> None:
    x, y = toy_arrays()
    xv, yv, k = validate_arrays(x, y, bounds=UNIT, name="toy")
    d = Dataset(name="toy", x=xv, y=yv, num_classes=k, bounds=UNIT)
    assert len(d) == 40 and d.input_shape == (2, 3) and d.num_classes == 4
