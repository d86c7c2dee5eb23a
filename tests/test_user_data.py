"""The user's own data: a split given as files (--members / --nonmembers / --population / --test), image folders
as a data source, and --normalize-mean / --normalize-std for models that expect normalised inputs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import modelsec
from modelsec.audits.runner import AuditConfig, run_audit
from modelsec.cli.main import main
from modelsec.core.errors import ConfigError, DataError
from modelsec.data import SplitFiles, SplitOverlapWarning, load_splits, user_splits
from modelsec.data.files import load_file, source_sha256
from modelsec.data.sklearn_sets import digits_dataset
from modelsec.models.base import Classifier
from modelsec.models.normalization import normalized
from modelsec.models.zoo import build_architecture
from tests.conftest import make_blobs


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    """Run the CLI in this process: (exit code, stderr)."""
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # main() replaces it
    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    return code, capsys.readouterr().err


def _write_images(root: Path, images: dict[str, list[np.ndarray]]) -> Path:
    """``root/<class>/<i>.png`` from uint8 arrays (H, W) grey or (H, W, 3) RGB."""
    for name, arrays in images.items():
        (root / name).mkdir(parents=True)
        for i, a in enumerate(arrays):
            Image.fromarray(a).save(root / name / f"{i:02d}.png")
    return root


def _grey(value: int, size: tuple[int, int] = (4, 3)) -> np.ndarray:
    return np.full(size, value, dtype=np.uint8)


# -- the user's split from files ---------------------------------------------------------------------------------


def test_user_split_from_npz_files_keeps_every_record_and_records_the_files(tmp_path: Path) -> None:
    x, y = make_blobs(90, d=6, classes=3)
    files = {}
    for name, part in (("members", slice(0, 40)), ("nonmembers", slice(40, 60)), ("test", slice(60, 90))):
        files[name] = tmp_path / f"{name}.npz"
        np.savez(files[name], x=x[part], y=y[part])
    splits = user_splits(files["members"], files["nonmembers"], test=files["test"])
    assert splits.source == "user split"
    np.testing.assert_array_equal(splits.members.x, x[:40])  # exactly the records, in their order: no split drawn
    np.testing.assert_array_equal(splits.nonmembers.y, y[40:60])
    assert splits.test is not None and splits.attacked is splits.test and len(splits.test) == 30
    assert len(splits.population) == 0 and splits.population.input_shape == (6,)
    assert {n: f.sha256 for n, f in splits.files.items()} == {n: _sha256(p) for n, p in files.items()}
    assert splits.overlaps() == {
        "members/nonmembers": 0,
        "members/population": 0,
        "nonmembers/population": 0,
        "members/test": 0,
    }
    # a held-out file missing the top class still has the members' number of classes
    np.savez(files["nonmembers"], x=x[40:60][y[40:60] < 2], y=y[40:60][y[40:60] < 2])
    assert user_splits(files["members"], files["nonmembers"]).nonmembers.num_classes == 3


def test_user_split_from_csv_files_with_class_names(tmp_path: Path) -> None:
    def csv(path: Path, rows: list[tuple[float, float, str]]) -> Path:
        path.write_text("a,b,label\n" + "".join(f"{a},{b},{c}\n" for a, b, c in rows))
        return path

    members = csv(tmp_path / "m.csv", [(0.1, 0.2, "cat"), (0.3, 0.4, "dog"), (0.5, 0.6, "eel")])
    nonmembers = csv(tmp_path / "n.csv", [(0.7, 0.8, "eel"), (0.9, 1.0, "cat"), (0.2, 0.1, "dog")])
    splits = user_splits(members, nonmembers)
    assert splits.members.class_names == ("cat", "dog", "eel")
    np.testing.assert_array_equal(splits.nonmembers.y, [2, 0, 1])  # the same names, the same labels
    # a file that lacks a class would number the others differently: refused, naming both files and the class
    fewer = csv(tmp_path / "fewer.csv", [(0.7, 0.8, "eel"), (0.9, 1.0, "cat")])
    with pytest.raises(
        DataError, match=r"m\.csv and .*fewer\.csv name different classes \(only .*m\.csv has \['dog'\]"
    ):
        user_splits(members, fewer)


def test_mismatched_files_are_refused_naming_both(tmp_path: Path) -> None:
    x, y = make_blobs(40, d=6, classes=2)
    members = tmp_path / "m.npz"
    np.savez(members, x=x, y=y)
    wide = tmp_path / "wide.npz"
    np.savez(wide, x=np.zeros((4, 7), np.float32), y=[0, 1, 0, 1])
    with pytest.raises(DataError, match=r"wide\.npz holds inputs of shape \(7,\) but .*m\.npz holds \(6,\)"):
        user_splits(members, wide)
    named = tmp_path / "named.npz"
    np.savez(named, x=x, y=y, class_names=np.array(["no", "yes"]))
    renamed = tmp_path / "renamed.npz"
    np.savez(renamed, x=x, y=y, class_names=np.array(["yes", "no"]))
    with pytest.raises(DataError, match=r"name different classes \(the same names in another order"):
        user_splits(named, renamed)
    with pytest.raises(ConfigError, match="without --nonmembers"):
        load_splits(SplitFiles(members=str(members), nonmembers=None))  # type: ignore[arg-type]


def test_overlapping_files_warn_and_are_left_out_of_membership_inference(tmp_path: Path) -> None:
    x, y = make_blobs(120, d=6, classes=3)
    np.savez(tmp_path / "m.npz", x=x[:60], y=y[:60])
    np.savez(tmp_path / "n.npz", x=x[55:100], y=y[55:100])  # 5 records in both
    with pytest.warns(SplitOverlapWarning, match=r"members/nonmembers: 5\).*leaves them out of membership inference"):
        splits = user_splits(tmp_path / "m.npz", tmp_path / "n.npz")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    config = AuditConfig(attacks=("fgsm",), eps=(0.05,), samples=20, checks=False)
    result = run_audit(net, splits, config=config).result
    assert result.data.overlaps["members/nonmembers"] == 5
    assert result.privacy is not None
    scored = result.privacy.attacks[0]
    assert (scored.n_members, scored.n_nonmembers) == (55, 40)  # the 5 shared records are neither
    assert any("left out of membership inference" in note for note in result.privacy.notes)


def test_reference_models_without_population_records(tmp_path: Path) -> None:
    """Offline reference models train on population records only: refused before any attack runs. Online ones
    train on the candidates themselves, so a split without population records works."""
    x, y = make_blobs(60, d=6, classes=2)
    np.savez(tmp_path / "m.npz", x=x[:30], y=y[:30])
    np.savez(tmp_path / "n.npz", x=x[30:], y=y[30:])
    net = nn.Sequential(nn.Linear(6, 2))
    with pytest.raises(ConfigError, match=r"offline reference models need population records.*--population FILE"):
        modelsec.audit(
            net, members=tmp_path / "m.npz", nonmembers=tmp_path / "n.npz", reference_models=2,
            reference_mode="offline", attacks=("fgsm",), samples=10,
        )  # fmt: skip
    result = modelsec.audit(
        net, members=tmp_path / "m.npz", nonmembers=tmp_path / "n.npz", reference_models=2, reference_epochs=1,
        workers=1, membership_attacks=("lira",), attacks=("fgsm",), samples=10, checks=False,
    )  # fmt: skip
    assert result.privacy is not None and result.privacy.compute["reference_mode"] == "online"
    assert [(a.attack, a.n_members, a.n_nonmembers) for a in result.privacy.attacks] == [("lira", 30, 30)]


# -- image folders ------------------------------------------------------------------------------------------------


def test_image_folder_reads_sorted_classes_and_scales_pixels(tmp_path: Path) -> None:
    root = _write_images(tmp_path / "imgs", {"zebra": [_grey(255), _grey(0)], "ant": [_grey(51)]})
    (root / "zebra" / "notes.txt").write_text("ignored")
    d = load_file(root)
    assert d.class_names == ("ant", "zebra") and d.num_classes == 2
    assert d.x.shape == (3, 1, 4, 3) and d.x.dtype == np.float32  # (n, C, H, W): 4 rows of 3 pixels
    np.testing.assert_array_equal(d.y, [0, 1, 1])
    np.testing.assert_allclose(d.x[:, 0, 0, 0], [51 / 255, 1.0, 0.0], rtol=1e-6)  # sorted files: 00.png, 01.png
    # any colour image makes every image RGB; a grey one becomes three equal channels
    colour = np.zeros((4, 3, 3), dtype=np.uint8)
    colour[..., 0] = 255
    Image.fromarray(colour).save(root / "ant" / "01.png")
    d = load_file(root)
    assert d.x.shape == (4, 3, 4, 3)
    np.testing.assert_allclose(d.x[1, :, 0, 0], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(d.x[0, :, 0, 0], [51 / 255] * 3, rtol=1e-6)
    # the recorded hash covers the images: changing one changes it
    before = source_sha256(root)
    Image.fromarray(_grey(52)).save(root / "ant" / "00.png")
    assert source_sha256(root) != before
    # --data accepts a folder too (the seeded split of its records)
    many = _write_images(
        tmp_path / "many", {"a": [_grey(v) for v in range(0, 40, 4)], "b": [_grey(v) for v in range(200, 210)]}
    )
    assert sum(len(s) for s in (lambda p: (p.members, p.nonmembers, p.population))(load_splits(str(many)))) == 20


def test_image_folder_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _write_images(tmp_path / "sizes", {"a": [_grey(0)], "b": [_grey(9, size=(5, 3))]})
    with pytest.raises(DataError, match=r"b/00\.png: the image is 3x5 pixels but .*a/00\.png is 3x4"):
        load_file(root)
    root = _write_images(tmp_path / "broken", {"a": [_grey(0)], "b": [_grey(1)]})
    (root / "b" / "01.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"b/01\.png: not a readable image"):
        load_file(root)
    root = _write_images(tmp_path / "bomb", {"a": [_grey(0)], "b": [_grey(1)]})
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2)  # 12 pixels > 2 * 2: Pillow's guard fires
    with pytest.raises(DataError, match=r"a/00\.png: refused as a possible decompression bomb"):
        load_file(root)
    monkeypatch.undo()
    loose = _write_images(tmp_path / "loose", {"a": [_grey(0)], "b": [_grey(1)]})
    Image.fromarray(_grey(3)).save(loose / "x.png")
    with pytest.raises(DataError, match="lies directly in the folder"):
        load_file(loose)
    empty = _write_images(tmp_path / "empty", {"a": [_grey(0)], "b": [_grey(1)]})
    (empty / "c").mkdir()
    with pytest.raises(DataError, match=r"c: the class folder holds no \.png"):
        load_file(empty)


def test_member_and_nonmember_folders_must_hold_the_same_classes(tmp_path: Path) -> None:
    members = _write_images(tmp_path / "train", {"cat": [_grey(0), _grey(10)], "dog": [_grey(20)]})
    nonmembers = _write_images(tmp_path / "held", {"cat": [_grey(30)], "dog": [_grey(40)]})
    splits = user_splits(members, nonmembers)
    assert splits.nonmembers.class_names == ("cat", "dog") and splits.members.input_shape == (1, 4, 3)
    other = _write_images(tmp_path / "other", {"cat": [_grey(30)], "emu": [_grey(40)]})
    with pytest.raises(DataError, match=r"only .*train has \['dog'\]; only .*other has \['emu'\]"):
        user_splits(members, other)


# -- the command line ---------------------------------------------------------------------------------------------


def test_cli_refuses_bad_split_options_and_mismatched_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    digits = digits_dataset()
    good, other = tmp_path / "m.npz", tmp_path / "n.npz"
    np.savez(good, x=digits.x[:50], y=digits.y[:50])
    np.savez(other, x=digits.x[50:90], y=digits.y[50:90])
    cases = {
        "nan.npz": (np.where(np.arange(64) == 3, np.nan, digits.x[50:60]), digits.y[50:60], "NaN"),
        "wide.npz": (np.zeros((10, 65), np.float32), digits.y[50:60], "holds inputs of shape (65,) but"),
        "big.npz": (digits.x[50:60] * 16, digits.y[50:60], "declared bounds are [0, 1]"),
        "names.npz": (digits.x[50:60], digits.y[50:60], "name different classes"),
    }
    for name, (x, y, message) in cases.items():
        extra = {"class_names": np.array([f"c{i}" for i in range(10)])} if name == "names.npz" else {}
        np.savez(tmp_path / name, x=x, y=y, **extra)
        members = tmp_path / ("names.npz" if name == "names.npz" else "m.npz")
        if name == "names.npz":
            np.savez(tmp_path / "other-names.npz", x=x, y=y, class_names=np.array([f"d{i}" for i in range(10)]))
            nonmembers = tmp_path / "other-names.npz"
        else:
            nonmembers = tmp_path / name
        code, err = _cli(capsys, monkeypatch, "audit", "--members", str(members), "--nonmembers", str(nonmembers),
                         "--no-store", "--out", str(tmp_path / "o"))  # fmt: skip
        assert code == 2 and message in err and "Traceback" not in err, (name, err)
    for args, message in [
        (["--members", str(good)], "without --nonmembers"),
        (["--nonmembers", str(other), "--test", str(other)], "without --members"),
        (["--members", str(good), "--nonmembers", str(other), "--data", "digits"], "not both"),
        (["--members", str(good), "--nonmembers", str(other), "--split-seed", "3"], "drop --split-seed"),
        (["--data", "digits", "--normalize-mean", "0.5"], "go together"),
        (["--data", "digits", "--normalize-mean", "0.5", "--normalize-std", "0"], "> 0"),
    ]:
        code, err = _cli(capsys, monkeypatch, "audit", *args, "--no-store", "--out", str(tmp_path / "o"))
        assert code == 2 and message in err and "Traceback" not in err, (args, err)
    for command in (["audit"], ["compare", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")]):
        code, err = _cli(capsys, monkeypatch, *command, "--members", str(good), "--no-store")
        assert code == 2 and "without --nonmembers" in err, (command, err)


def test_cli_membership_audit_on_the_exact_training_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A digits MLP trained (here) on exactly the records of m.npz, audited with --members m.npz --nonmembers n.npz:
    the membership audit scores exactly those records, robustness runs on --test, and result.json records the
    files."""
    from safetensors.torch import save_file

    digits = digits_dataset()
    order = np.random.default_rng(0).permutation(len(digits))
    parts = {"m": order[:240], "n": order[240:400], "t": order[400:430]}
    for name, idx in parts.items():
        np.savez(tmp_path / f"{name}.npz", x=digits.x[idx], y=digits.y[idx])
    torch.manual_seed(0)
    net = build_architecture("mlp", digits.input_shape, 10)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x, y = torch.from_numpy(digits.x[parts["m"]]), torch.from_numpy(digits.y[parts["m"]])
    for _ in range(150):  # full batch until it fits its members
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    save_file(net.state_dict(), tmp_path / "mlp.safetensors")
    out = tmp_path / "audit"
    code, err = _cli(
        capsys, monkeypatch, "audit", "--model", str(tmp_path / "mlp.safetensors"), "--arch", "mlp",
        "--members", str(tmp_path / "m.npz"), "--nonmembers", str(tmp_path / "n.npz"),
        "--test", str(tmp_path / "t.npz"),
        "--attacks", "fgsm", "--eps", "0.1", "--samples", "100", "--no-store", "--out", str(out), "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert "--samples 100 is more than the 30 test records" in err
    r = json.loads((out / "result.json").read_text())
    data = r["data"]
    assert data["name"] == "user split"
    assert (data["n_members"], data["n_nonmembers"], data["n_population"], data["n_test"]) == (240, 160, 0, 30)
    assert data["files"] == {
        name: {"path": str(tmp_path / f"{short}.npz"), "sha256": _sha256(tmp_path / f"{short}.npz")}
        for name, short in (("members", "m"), ("nonmembers", "n"), ("test", "t"))
    }
    assert r["robustness"]["n"] == 30  # the test file, not the non-members
    arrays = np.load(out / "adversarial.npz")
    np.testing.assert_array_equal(np.sort(arrays["y"]), np.sort(digits.y[parts["t"]]))
    attack = r["privacy"]["attacks"][0]
    assert (attack["n_members"], attack["n_nonmembers"]) == (240, 160)  # every record of the files, no others
    assert "File (members)" in (out / "report.html").read_text()


# -- --normalize-mean / --normalize-std ---------------------------------------------------------------------------


MEAN, STD = (0.2, 0.5, 0.7), (0.25, 0.5, 0.1)


def _normalised_model_and_folded_twin() -> tuple[nn.Module, nn.Module]:
    """A small CNN that takes normalised (3, 6, 6) inputs, and the same network with the normalisation folded into
    its first convolution (it takes raw inputs)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    folded = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    folded.load_state_dict(net.state_dict())
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():  # w * (x - m) / s + b = (w / s) * x + (b - sum(w * m / s))
        w = net[0].weight
        folded[0].weight.copy_(w / std)
        folded[0].bias.copy_(net[0].bias - (w * mean / std).sum(dim=(1, 2, 3)))
    return net, folded


def _image_splits(tmp_path: Path, net: nn.Module) -> SplitFiles:
    """Random (3, 6, 6) images labelled by ``net`` on their normalised inputs, with some labels flipped."""
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, size=(120, 3, 6, 6)).astype(np.float32)
    with torch.no_grad():
        y = net((torch.from_numpy(x) - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1))
    labels = y.argmax(1).numpy()
    labels[::7] = (labels[::7] + 1) % 3  # some clean errors
    np.savez(tmp_path / "m.npz", x=x[:60], y=labels[:60])
    np.savez(tmp_path / "n.npz", x=x[60:], y=labels[60:])
    return SplitFiles(members=str(tmp_path / "m.npz"), nonmembers=str(tmp_path / "n.npz"))


@pytest.mark.numerics
def test_normalize_equals_the_model_with_normalisation_folded_in(tmp_path: Path) -> None:
    net, folded = _normalised_model_and_folded_twin()
    x = torch.rand(16, 3, 6, 6, generator=torch.Generator().manual_seed(2))
    clf = normalized(Classifier(net, input_shape=(3, 6, 6), num_classes=3), MEAN, STD)
    twin = Classifier(folded, input_shape=(3, 6, 6), num_classes=3)
    torch.testing.assert_close(clf.predict_logits(x), twin.predict_logits(x), rtol=1e-5, atol=1e-5)
    y = clf.predict(x)
    torch.testing.assert_close(clf.input_gradient(x, y), twin.input_gradient(x, y), rtol=1e-4, atol=1e-6)

    files = _image_splits(tmp_path, net)
    config = AuditConfig(attacks=("fgsm",), eps=(0.03,), samples=60, checks=False)
    ours = run_audit(net, files, config=dataclasses.replace(config, normalize_mean=MEAN, normalize_std=STD))
    theirs = run_audit(folded, files, config=config)
    assert ours.result.robustness is not None and theirs.result.robustness is not None
    assert ours.result.robustness.clean_accuracy == theirs.result.robustness.clean_accuracy < 1.0
    assert ours.result.robustness.robust_accuracy == theirs.result.robustness.robust_accuracy
    assert ours.robustness_run is not None and theirs.robustness_run is not None
    a, b = ours.robustness_run.npz_arrays(), theirs.robustness_run.npz_arrays()
    np.testing.assert_allclose(a["x_adv_0"], b["x_adv_0"], atol=1e-6)  # the same adversarial examples, in raw units
    assert np.abs(a["x_adv_0"] - a["x"]).max() <= 0.03 + 1e-6  # eps keeps its raw meaning
    assert ours.result.settings["normalize"] == {"mean": list(MEAN), "std": list(STD)}
    assert theirs.result.settings["normalize"] is None


def test_normalize_refuses_a_channel_count_the_model_does_not_have(tmp_path: Path) -> None:
    net, _ = _normalised_model_and_folded_twin()
    files = _image_splits(tmp_path, net)
    config = AuditConfig(attacks=("fgsm",), samples=5, normalize_mean=(0.5, 0.5), normalize_std=(0.2, 0.2))
    with pytest.raises(ConfigError, match=r"have 2 values but the model's inputs \(3, 6, 6\) have 3 channels"):
        run_audit(net, files, config=config)
    one = AuditConfig(attacks=("fgsm",), samples=5, checks=False, normalize_mean=(0.5,), normalize_std=(0.25,))
    assert run_audit(net, files, config=one).result.settings["normalize"] == {"mean": [0.5], "std": [0.25]}
