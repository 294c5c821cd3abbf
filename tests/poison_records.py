"""Records written straight into the topic, around ingest, the way a buggy or hostile producer
would: out-of-range integers in every integer field of every event type, huge strings, wrong
types, valid JSON of the wrong shape, bytes that are not JSON, and damaged Arrow points."""

from __future__ import annotations

import asyncio
import json
import struct
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

import orjson
import pyarrow as pa
from aiokafka import AIOKafkaProducer

from runledger.ingest.contract import codec, metric_table
from runledger.ingest.contract.events import EXPERIMENT_EVENTS, EXPERIMENTS_KEY, MODEL_EVENTS, SCHEMA_VERSION
from tests.arrow_bombs import bomb_stream, small_table

U64 = 2 ** 64 - 1
I64_PAST = 2 ** 63
HUGE = "x" * (9 * 1024 * 1024)  # longer than any request body could carry


@dataclass
class Raw:
    """One record to produce: why it is poison, its key and its bytes."""

    name: str
    key: bytes
    value: bytes | None


def doc(etype: str, payload: Any, *, run_id: str | None = None, experiment_id: str | None = None,
        ingest_time: Any = 1_700_000_000_000, **override: Any) -> dict[str, Any]:
    return {"event_id": f"poison-{uuid.uuid4().hex}", "type": etype, "schema_version": 1,
            "experiment_id": experiment_id, "run_id": run_id, "ingest_time": ingest_time, "user": "mallory",
            "payload": payload, **override}


def _key(d: dict[str, Any]) -> bytes:
    if d["type"] in EXPERIMENT_EVENTS:
        return EXPERIMENTS_KEY
    if d["type"] in MODEL_EVENTS and isinstance(d["payload"], dict):
        return str(d["payload"].get("model_id") or "").encode()
    return str(d.get("run_id") or "").encode()


def _json(name: str, d: dict[str, Any], key: bytes | None = None) -> Raw:
    # The standard library writes integers of any size (orjson refuses those past 64 bits).
    return Raw(name, key if key is not None else _key(d), json.dumps(d).encode())


def valid_events(exp_id: str, run_id: str, model_id: str) -> dict[str, dict[str, Any]]:
    """One event of every type that the fold would apply as it is (given the experiment, run
    and model exist)."""
    def ex(t: str, p: dict[str, Any]) -> dict[str, Any]:
        return doc(t, p, experiment_id=exp_id)

    def run(t: str, p: dict[str, Any], rid: str = run_id) -> dict[str, Any]:
        return doc(t, p, run_id=rid, experiment_id=exp_id)

    def model(t: str, p: dict[str, Any]) -> dict[str, Any]:
        return doc(t, {"model_id": model_id, **p}, experiment_id=exp_id)

    metrics = {"keys": ["m"], "values": [1.0], "timestamps": [1], "steps": [0]}
    return {
        "ExperimentCreated": doc("ExperimentCreated", {"name": f"p-{uuid.uuid4().hex}", "artifact_location": None,
                                                       "artifact_root": "file:///tmp/a", "tags": []}),
        "ExperimentRenamed": ex("ExperimentRenamed", {"new_name": f"p-{uuid.uuid4().hex}"}),
        "ExperimentDeleted": ex("ExperimentDeleted", {}),
        "ExperimentRestored": ex("ExperimentRestored", {}),
        "ExperimentTagSet": ex("ExperimentTagSet", {"key": "k", "value": "v"}),
        "ExperimentTagDeleted": ex("ExperimentTagDeleted", {"key": "k"}),
        "RunCreated": run("RunCreated", {"run_name": "p", "start_time": 1, "user_id": "u", "artifact_uri": "a",
                                         "tags": []}, rid=uuid.uuid4().hex),
        "RunUpdated": run("RunUpdated", {"status": "FINISHED", "end_time": 5, "run_name": None}),
        "RunDeleted": run("RunDeleted", {}),
        "RunRestored": run("RunRestored", {}),
        "ParamsLogged": run("ParamsLogged", {"params": [["p", "v"]]}),
        "MetricsLogged": run("MetricsLogged", dict(metrics)),
        "TagsSet": run("TagsSet", {"tags": [["t", "v"]]}),
        "TagDeleted": run("TagDeleted", {"key": "t"}),
        "RunBatchLogged": run("RunBatchLogged", {"params": [], "metrics": dict(metrics), "tags": []}),
        "InputsLogged": run("InputsLogged", {"datasets": [{"name": "d", "digest": "1", "source_type": "s",
                                                           "source": "s", "schema": None, "profile": None,
                                                           "tags": []}]}),
        "LoggedModelCreated": doc("LoggedModelCreated", {
            "model_id": f"m-{uuid.uuid4().hex}", "name": "m", "model_type": "", "source_run_id": run_id,
            "artifact_uri": "a", "params": [], "tags": []}, experiment_id=exp_id),
        "LoggedModelFinalized": model("LoggedModelFinalized", {"status": "LOGGED_MODEL_READY"}),
        "LoggedModelDeleted": model("LoggedModelDeleted", {}),
        "LoggedModelTagsSet": model("LoggedModelTagsSet", {"tags": [["t", "v"]]}),
        "LoggedModelTagDeleted": model("LoggedModelTagDeleted", {"key": "t"}),
        "LoggedModelParamsLogged": model("LoggedModelParamsLogged", {"params": [["p", "v"]]}),
    }


def _with(d: dict[str, Any], **payload: Any) -> dict[str, Any]:
    return {**d, "event_id": f"poison-{uuid.uuid4().hex}", "payload": {**d["payload"], **payload}}


def _arrow_record(d: dict[str, Any], count: Any, ipc: bytes) -> bytes:
    header = orjson.dumps({**d, "payload": {"points_table": count}})
    return codec.POINTS_MAGIC + len(header).to_bytes(4, "big") + header + ipc


def _bad_utf8_points() -> bytes:
    keys = pa.array([b"\xff\xfeloss"], pa.binary()).view(pa.string())
    table = pa.Table.from_arrays([keys, pa.array([1.0]), pa.array([1], pa.int64()), pa.array([1], pa.int64())],
                                 schema=metric_table.SCHEMA)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, metric_table.SCHEMA) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def poison_records(exp_id: str, run_id: str, model_id: str) -> list[Raw]:
    good = valid_events(exp_id, run_id, model_id)
    out: list[Raw] = []
    # Every event type, with an ingest time out of the int64 range (it reaches BIGINT columns
    # of every table through the event log).
    for etype, d in good.items():
        out.append(_json(f"{etype} ingest_time 2**64-1", {**d, "ingest_time": U64}))
    out.append(_json("schema_version 2**64-1", {**good["TagsSet"], "schema_version": U64}))
    # A version from the future, one from before the first, and a type nobody defined.
    out.append(_json("schema_version from the future", {**good["TagsSet"], "schema_version": SCHEMA_VERSION + 1}))
    out.append(_json("schema_version 0", {**good["RunCreated"], "schema_version": 0}))
    out.append(_json("schema_version string", {**good["TagsSet"], "schema_version": "1"}))
    out.append(_json("schema_version true", {**good["TagsSet"], "schema_version": True}))
    out.append(_json("unknown event type", {**good["TagsSet"], "type": "RunTeleported"}))
    # Every integer field of a payload.
    for value in (U64, I64_PAST, -I64_PAST - 1, 10 ** 30):
        out.append(_json(f"RunCreated start_time {value}", _with(good["RunCreated"], start_time=value)))
        out.append(_json(f"RunUpdated end_time {value}", _with(good["RunUpdated"], end_time=value)))
    for column in ("timestamps", "steps", "values"):
        for value in ([U64], [1, U64], [I64_PAST]):
            m = {"keys": ["m"] * len(value), "values": [1.0] * len(value), "timestamps": [1] * len(value),
                 "steps": [0] * len(value), column: value}
            out.append(_json(f"MetricsLogged {column} {value}", _with(good["MetricsLogged"], **m)))
            out.append(_json(f"RunBatchLogged metrics.{column} {value}", _with(good["RunBatchLogged"], metrics=m)))
    # Strings longer than any request could carry.
    out.append(_json("RunCreated run_name 9 MiB", _with(good["RunCreated"], run_name=HUGE)))
    out.append(_json("TagsSet value 9 MiB", _with(good["TagsSet"], tags=[["t", HUGE]])))
    out.append(_json("ExperimentCreated name 9 MiB", _with(good["ExperimentCreated"], name=HUGE)))
    # Wrong types.
    out += [
        _json("RunCreated run_name int", _with(good["RunCreated"], run_name=5)),
        _json("RunCreated start_time string", _with(good["RunCreated"], start_time="1")),
        _json("RunCreated start_time bool", _with(good["RunCreated"], start_time=True)),
        _json("TagsSet tags dict", _with(good["TagsSet"], tags={"a": "b"})),
        _json("TagsSet tags of strings", _with(good["TagsSet"], tags=["ab"])),
        _json("TagsSet tags triple", _with(good["TagsSet"], tags=[["a", "b", "c"]])),
        _json("ParamsLogged value int", _with(good["ParamsLogged"], params=[["p", 1]])),
        _json("RunUpdated status list", _with(good["RunUpdated"], status=["FINISHED"])),
        _json("InputsLogged datasets dict", _with(good["InputsLogged"], datasets={"d": 1})),
        _json("InputsLogged dataset string", _with(good["InputsLogged"], datasets=["d"])),
        _json("ExperimentCreated name null", _with(good["ExperimentCreated"], name=None)),
        _json("MetricsLogged keys string", _with(good["MetricsLogged"], keys="m")),
        _json("MetricsLogged model_ids string", _with(good["MetricsLogged"], model_ids="m", dataset_names=None,
                                                      dataset_digests=None)),
        _json("LoggedModelTagsSet tags string", _with(good["LoggedModelTagsSet"], tags="t")),
        _json("envelope run_id int", {**good["TagsSet"], "run_id": 5}, key=run_id.encode()),
        _json("envelope experiment_id list", {**good["ExperimentTagSet"], "experiment_id": []}),
    ]
    # Valid JSON of the wrong shape.
    out += [Raw("JSON list", run_id.encode(), b"[]"), Raw("JSON string", run_id.encode(), b'"x"'),
            Raw("JSON null", run_id.encode(), b"null"), Raw("JSON empty object", run_id.encode(), b"{}"),
            _json("payload a list", {**good["TagsSet"], "payload": [["t", "v"]]}),
            _json("RunBatchLogged metrics a list", _with(good["RunBatchLogged"], metrics=[1, 2]))]
    # Not JSON at all.
    out += [Raw("binary garbage", run_id.encode(), b"\xff\xfe\x00garbage"), Raw("empty", run_id.encode(), b""),
            Raw("no value", run_id.encode(), None), Raw("cut JSON", run_id.encode(), orjson.dumps(good["TagsSet"])[:-9])]
    # Damaged Arrow points.
    metrics_doc = good["MetricsLogged"]
    ok_ipc = metric_table.to_ipc(metric_table.from_columns(metrics_doc["payload"]))
    out += [
        Raw("Arrow garbage", run_id.encode(), _arrow_record(metrics_doc, 1, b"\x00" * 64)),
        Raw("Arrow count 2**64-1", run_id.encode(), _arrow_record({**metrics_doc, "event_id": f"poison-{uuid.uuid4().hex}"},
                                                                  U64, ok_ipc)),
        Raw("Arrow keys not UTF-8", run_id.encode(), _arrow_record({**metrics_doc, "event_id": f"poison-{uuid.uuid4().hex}"},
                                                                   1, _bad_utf8_points())),
        Raw("Arrow header length past the end", run_id.encode(), codec.POINTS_MAGIC + struct.pack(">I", 2 ** 31)),
        Raw("Arrow 1 GiB zstd bomb", run_id.encode(), _arrow_record(
            {**metrics_doc, "event_id": f"poison-{uuid.uuid4().hex}"}, 10,
            bomb_stream("value", 1 << 30, small_table(metric_table.SCHEMA)))),
    ]
    return out


async def produce(bootstrap: str, topic: str, records: list[Raw]) -> list[tuple[int, int]]:
    """Produce `records` in order, each acknowledged before the next; (partition, offset) each."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=16 * 1024 * 1024, acks="all")
    await producer.start()
    try:
        out = []
        for r in records:
            meta = await producer.send_and_wait(topic, r.value, key=r.key)
            out.append((meta.partition, meta.offset))
        return out
    finally:
        await producer.stop()


async def project_all(bootstrap: str, topic: str, records: list[Raw], store: Any,
                      on_verdicts: Callable[[dict[str, Any]], None] = lambda verdicts: None) -> None:
    """Produce `records` into `topic` (one partition) and run a projector over them into `store`
    until every one is applied, then stop it; the store stays open for the caller to read."""
    from runledger.ingest.topic import ensure_topic
    from runledger.projector.consumer import Projector

    partitions = await ensure_topic(bootstrap, topic, 1)
    await produce(bootstrap, topic, records)
    projector = Projector(store, bootstrap, topic, on_verdicts)
    await projector.start(partitions)
    task = asyncio.create_task(projector.run())
    try:
        deadline = time.monotonic() + 30
        while projector.applied_offsets.get(0, 0) < len(records):
            assert time.monotonic() < deadline and not task.done(), task.done() and task.exception()
            await asyncio.sleep(0.05)
    finally:
        await projector.stop()
        await asyncio.wait_for(task, 10)
        await projector.close()


def produce_sync(bootstrap: str, topic: str, records: list[Raw]) -> list[tuple[int, int]]:
    return asyncio.run(produce(bootstrap, topic, records))
