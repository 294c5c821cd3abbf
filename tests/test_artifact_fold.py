"""What the fold decides about artifacts and the rest of the ExperimentsService (issue 18): pure
fold logic over Envelopes, plus one store test for the order artifact writes and deletions are
applied in."""

from __future__ import annotations

import json
from pathlib import Path

from runledger.projector.fold import MODEL_HISTORY_TAG, FoldState, fold_batch
from runledger.projector.store import Store
from tests.test_fold import RUN, assert_applied, assert_rejected, create_run, ev, fold, rec, state_after

MODEL = "m-0123456789abcdef0123456789abcdef"


def artifact(path: str, size: int = 3, run: str = RUN, **kw):  # type: ignore[no-untyped-def]
    return ev("ArtifactLogged", {"path": path, "size": size, "sha256": "0" * 64}, run=run, **kw)


def deleted(path: str, run: str = RUN, **kw):  # type: ignore[no-untyped-def]
    return ev("ArtifactDeleted", {"path": path, "files": []}, run=run, **kw)


def test_an_upload_is_an_artifact_write_of_its_run_with_size_digest_and_actor() -> None:
    up = artifact("plots/a.png", 1234)
    result = fold(create_run(), up)
    assert_applied(result, up)
    [op] = result.changes.artifacts
    assert (op.kind, op.owner_id, op.owner_type, op.experiment_id, op.path, op.size, op.sha256, op.actor) == \
        ("put", RUN, "run", "1", "plots/a.png", 1234, "0" * 64, "alice")


def test_uploads_and_deletions_keep_their_order_in_the_batch() -> None:
    result = fold(create_run(), artifact("a"), deleted("a"), artifact("a", 9))
    assert [(o.kind, o.path, o.size) for o in result.changes.artifacts] == [("put", "a", 3), ("delete", "a", None),
                                                                            ("put", "a", 9)]


def test_an_upload_to_a_deleted_run_is_refused_like_any_write() -> None:
    state = state_after(create_run(), ev("RunDeleted"))
    up = artifact("a")
    result = fold(up, state=state)
    assert_rejected(result, up, "INVALID_PARAMETER_VALUE")
    assert result.changes.artifacts == []


def test_an_upload_to_an_unknown_run_is_resource_does_not_exist() -> None:
    up = artifact("a", run="nope")
    assert_rejected(fold(up), up, "RESOURCE_DOES_NOT_EXIST")


def test_a_negative_size_is_a_malformed_event() -> None:
    up = artifact("a", -1)
    assert_rejected(fold(create_run(), up), up, "MALFORMED_EVENT")


def test_a_deletion_shows_in_the_trail_as_a_summary_of_what_went() -> None:
    gone = ev("ArtifactDeleted", {"path": "d", "files": [[f"d/{i}", 10] for i in range(250)]})
    result = fold(create_run(), gone)
    [entry] = [e for e in result.changes.log if e.event_id == gone.event_id]
    assert entry.payload["file_count"] == 250 and entry.payload["bytes"] == 2500
    assert len(entry.payload["files"]) == 100


def test_log_model_appends_each_model_to_the_history_tag_in_log_order() -> None:
    first, second = ({"run_id": RUN, "artifact_path": p, "flavors": {}} for p in ("m1", "m2"))
    state = state_after(create_run(), ev("ModelHistoryLogged", {"model": first}))
    result = fold(ev("ModelHistoryLogged", {"model": second}), state=state)
    assert json.loads(result.changes.tags[(RUN, MODEL_HISTORY_TAG)]) == [first, second]


def test_log_model_onto_a_history_tag_that_is_not_a_list_is_refused() -> None:
    state = state_after(create_run(), ev("TagsSet", {"tags": [[MODEL_HISTORY_TAG, "not json"]]}))
    bad = ev("ModelHistoryLogged", {"model": {"artifact_path": "m"}})
    assert_rejected(fold(bad, state=state), bad, "INVALID_PARAMETER_VALUE")


def test_model_inputs_and_outputs_are_kept_per_run() -> None:
    inputs = ev("InputsLogged", {"datasets": [], "models": [MODEL, MODEL]})
    outputs = ev("OutputsLogged", {"models": [[MODEL, 0], [MODEL, 5]]})
    result = fold(create_run(), inputs, outputs)
    assert list(result.changes.model_inputs) == [(RUN, MODEL)]
    assert sorted(result.changes.model_outputs) == [(RUN, MODEL, 0), (RUN, MODEL, 5)]


def test_a_model_artifact_needs_the_model_to_exist() -> None:
    up = ev("LoggedModelArtifactLogged", {"model_id": MODEL, "path": "MLmodel", "size": 1, "sha256": "x"}, run=None)
    assert_rejected(fold(up), up, "RESOURCE_DOES_NOT_EXIST")


def test_the_store_applies_writes_and_deletions_in_order(tmp_path: Path) -> None:
    events = [create_run(), artifact("keep/a"), artifact("d/x"), artifact("d/y/z"), artifact("dx"), deleted("d"),
              artifact("d/new")]
    result = fold_batch(FoldState(), [rec(e) for e in events])
    store = Store(tmp_path / "s.duckdb")
    try:
        store.apply(result.changes, "t", {})
        rows = store.con.execute("SELECT path FROM artifacts ORDER BY path").fetchall()
    finally:
        store.close()
    assert [r[0] for r in rows] == ["d/new", "dx", "keep/a"]
