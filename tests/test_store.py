"""The SQLite run store: round trips, id lookup, ordering, artifact hashes and bad files."""

from __future__ import annotations

import dataclasses
import re
import sqlite3
import threading
from pathlib import Path

import pytest

from modelsec.core.errors import ModelsecError, StoreError
from modelsec.store import STORE_VERSION, RunStore, default_store_path, new_run_id
from tests.store_fixtures import make_result


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "nested" / "dir" / "runs.sqlite")


def _artifacts(tmp_path: Path) -> dict[str, Path]:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    (out / "result.json").write_text('{"x": 1}\n', encoding="utf-8")
    (out / "report.html").write_text("<html></html>\n", encoding="utf-8")
    return {"result": out / "result.json", "report": out / "report.html"}


def test_creates_parents_schema_and_version(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "runs.sqlite"
    RunStore(path)
    assert path.is_file()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == STORE_VERSION
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    assert {"runs", "artifacts"} <= tables
    RunStore(path)  # reopening an existing store is fine


def test_record_get_round_trip(store: RunStore, tmp_path: Path) -> None:
    result = make_result()
    artifacts = _artifacts(tmp_path)
    run_id = store.record_audit(result, out_dir=str(tmp_path / "out"), artifacts=artifacts)
    assert run_id == result.run_id

    stored = store.get(run_id)
    assert stored.result is not None
    assert stored.result.to_dict() == result.to_dict()
    assert stored.result == result
    assert stored.config == result.settings
    s = stored.summary
    assert (s.id, s.kind, s.status) == (run_id, "audit", "complete")
    assert (s.model_path, s.model_sha256, s.arch) == (
        result.model.path,
        result.model.sha256,
        result.model.arch,
    )
    assert (s.data_name, s.seed) == (result.data.name, result.seed)
    assert (s.verdict_level, s.headline) == ("warning", result.verdict.headline)
    assert s.out_dir == str((tmp_path / "out").resolve())
    assert s.created_at == result.created_at

    by_name = {a.name: a for a in stored.artifacts}
    assert set(by_name) == {"result", "report"}
    assert by_name["result"].size == len(b'{"x": 1}\n')
    assert re.fullmatch(r"[0-9a-f]{64}", by_name["result"].sha256)
    assert Path(by_name["report"].path) == artifacts["report"].resolve()
    assert store.verify_artifacts(run_id) == {"result": True, "report": True}


def test_run_without_robustness_or_privacy(store: RunStore) -> None:
    result = make_result(robustness=None, privacy=None, run_id="r-minimal")
    store.record_audit(result, out_dir=None, artifacts={})
    stored = store.get("r-minimal")
    assert stored.result == result
    assert stored.artifacts == []
    assert stored.summary.out_dir is None


def test_duplicate_run_id_is_refused_and_nothing_partial_is_written(store: RunStore, tmp_path: Path) -> None:
    store.record_audit(make_result(), out_dir=None, artifacts={})
    with pytest.raises(StoreError, match="already"):
        store.record_audit(make_result(), out_dir=None, artifacts=_artifacts(tmp_path))
    assert store.get(make_result().run_id).artifacts == []
    assert len(store.list_runs()) == 1


def test_missing_artifact_is_refused_before_writing(store: RunStore, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="artifact 'report'"):
        store.record_audit(make_result(), out_dir=None, artifacts={"report": tmp_path / "nope"})
    assert store.list_runs() == []


def test_prefix_lookup(store: RunStore) -> None:
    store.record_audit(make_result(run_id="20261125-224501-3fa2c1"), out_dir=None, artifacts={})
    store.record_audit(make_result(run_id="20261125-224501-3fb000"), out_dir=None, artifacts={})
    store.record_audit(make_result(run_id="20261126-000000-aaaaaa"), out_dir=None, artifacts={})
    assert store.get("20261125-224501-3fa").summary.id == "20261125-224501-3fa2c1"
    assert store.get("20261126").summary.id == "20261126-000000-aaaaaa"
    assert store.get(" 20261126-000000-aaaaaa ").summary.id == "20261126-000000-aaaaaa"


def test_exact_id_wins_over_longer_ids_it_prefixes(store: RunStore) -> None:
    store.record_audit(make_result(run_id="run1"), out_dir=None, artifacts={})
    store.record_audit(make_result(run_id="run10"), out_dir=None, artifacts={})
    assert store.get("run1").summary.id == "run1"


def test_ambiguous_prefix_lists_matches(store: RunStore) -> None:
    store.record_audit(make_result(run_id="20261125-224501-3fa2c1"), out_dir=None, artifacts={})
    store.record_audit(make_result(run_id="20261125-224501-3fb000"), out_dir=None, artifacts={})
    with pytest.raises(StoreError, match="ambiguous") as err:
        store.get("20261125-224501-3f")
    assert "20261125-224501-3fa2c1" in str(err.value)
    assert "20261125-224501-3fb000" in str(err.value)


def test_unknown_id(store: RunStore) -> None:
    store.record_audit(make_result(), out_dir=None, artifacts={})
    with pytest.raises(StoreError, match="no run"):
        store.get("1999")
    with pytest.raises(StoreError, match="no run"):
        store.verify_artifacts("1999")
    with pytest.raises(StoreError):
        store.get("")
    # A LIKE wildcard in the prefix is taken literally.
    with pytest.raises(StoreError, match="no run"):
        store.get("%")


def test_store_error_is_a_user_error() -> None:
    assert issubclass(StoreError, ModelsecError)


def test_list_newest_first_and_limit(store: RunStore) -> None:
    stamps = {
        "b": "2026-11-25T10:00:00+00:00",
        "a": "2026-11-25T12:00:00+00:00",
        # Same instant as "a" written in another time zone: still sorts as 11:30 UTC.
        "c": "2026-11-25T12:30:00+01:00",
        "d": "2026-11-24T23:59:59Z",
    }
    for run_id, created_at in stamps.items():
        store.record_audit(make_result(run_id=run_id, created_at=created_at), out_dir=None, artifacts={})
    assert [r.id for r in store.list_runs()] == ["a", "c", "b", "d"]
    assert [r.id for r in store.list_runs(limit=2)] == ["a", "c"]
    with pytest.raises(ModelsecError):
        store.list_runs(limit=0)


def test_same_timestamp_sorts_last_recorded_first(store: RunStore) -> None:
    for run_id in ["x", "y", "z"]:
        store.record_audit(make_result(run_id=run_id), out_dir=None, artifacts={})
    assert [r.id for r in store.list_runs()] == ["z", "y", "x"]


def test_verify_detects_changed_and_deleted_files(store: RunStore, tmp_path: Path) -> None:
    artifacts = _artifacts(tmp_path)
    extra = tmp_path / "out" / "adversarial.npz"
    extra.write_bytes(b"\x00" * 100)
    artifacts["adversarial"] = extra
    run_id = store.record_audit(make_result(), out_dir=None, artifacts=artifacts)

    artifacts["result"].write_text('{"x": 2}\n', encoding="utf-8")  # same size, other content
    artifacts["report"].unlink()
    assert store.verify_artifacts(run_id[:10]) == {
        "adversarial": True,
        "report": False,
        "result": False,
    }


def test_non_sqlite_file_gives_store_error(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    path.write_text("this is not a database, just some text\n" * 20, encoding="utf-8")
    with pytest.raises(StoreError, match="not a modelsec run store"):
        RunStore(path)


def test_foreign_sqlite_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE songs (title TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="not a modelsec run store"):
        RunStore(path)


def test_folder_as_store_path_gives_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="folder"):
        RunStore(tmp_path)


def test_future_user_version_gives_store_error(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    RunStore(path)
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {STORE_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="upgrade modelsec"):
        RunStore(path)


def test_unreadable_stored_result_gives_store_error(store: RunStore) -> None:
    store.record_audit(make_result(run_id="r1"), out_dir=None, artifacts={})
    conn = sqlite3.connect(store.path)
    conn.execute("UPDATE runs SET result_json = '{\"schema_version\": 1}' WHERE id = 'r1'")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="cannot read"):
        store.get("r1")


def test_concurrent_opening_and_writing(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            s = RunStore(path)
            s.record_audit(make_result(run_id=f"run-{i}"), out_dir=None, artifacts={})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(RunStore(path).list_runs()) == 8


def test_new_run_id_shape_and_uniqueness() -> None:
    ids = {new_run_id() for _ in range(200)}
    assert len(ids) == 200
    for rid in ids:
        assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{6}", rid)


def test_default_path_honours_modelsec_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MODELSEC_STORE", str(tmp_path / "mine.db"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_store_path() == tmp_path / "mine.db"


def test_default_path_honours_xdg_data_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MODELSEC_STORE", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_store_path() == tmp_path / "xdg" / "modelsec" / "runs.sqlite"


def test_default_path_falls_back_to_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MODELSEC_STORE", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_store_path() == tmp_path / ".local" / "share" / "modelsec" / "runs.sqlite"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert default_store_path() == tmp_path / ".local" / "share" / "modelsec" / "runs.sqlite"


def test_summary_and_stored_run_are_frozen(store: RunStore) -> None:
    store.record_audit(make_result(), out_dir=None, artifacts={})
    stored = store.get(make_result().run_id)
    with pytest.raises(dataclasses.FrozenInstanceError):
        stored.summary.id = "x"  # type: ignore[misc]


def test_reading_never_creates_a_store(tmp_path: Path) -> None:
    """`runs list` / `runs show` open the store read-only: no folder, no file, no tables appear."""
    path = tmp_path / "nonexistent" / "dir" / "runs.sqlite"
    reader = RunStore(path, readonly=True)
    assert reader.list_runs() == []
    with pytest.raises(StoreError, match="no run store at"):
        reader.get("abc")
    with pytest.raises(StoreError, match="no run store at"):
        reader.verify_artifacts("abc")
    assert not (tmp_path / "nonexistent").exists()
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    assert RunStore(empty, readonly=True).list_runs() == []
    with pytest.raises(StoreError, match="holds no runs"):
        RunStore(empty, readonly=True).get("abc")
    assert empty.stat().st_size == 0
    with pytest.raises(StoreError, match="read-only"):
        RunStore(empty, readonly=True).record_audit(make_result(), out_dir=None, artifacts={})


def test_reading_a_store_leaves_it_as_it_was(store: RunStore) -> None:
    store.record_audit(make_result(), out_dir=None, artifacts={})
    files = sorted(p.name for p in store.path.parent.iterdir())
    data = store.path.read_bytes()
    reader = RunStore(store.path, readonly=True)
    assert [s.id for s in reader.list_runs()] == [make_result().run_id]
    assert reader.get(make_result().run_id[:12]).result == make_result()
    assert sorted(p.name for p in store.path.parent.iterdir()) == files  # no -wal / -shm left behind
    assert store.path.read_bytes() == data
    not_a_store = store.path.parent / "weights.safetensors"
    not_a_store.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}" + b" " * 200)
    with pytest.raises(StoreError, match="not a modelsec run store"):
        RunStore(not_a_store, readonly=True).list_runs()
    assert not_a_store.read_bytes().startswith(b"\x10")
