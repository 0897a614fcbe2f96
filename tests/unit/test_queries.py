"""/v1 queries: one key from its owning task, 404 naming the partition, paged listings."""

from __future__ import annotations

import json

from stream_trainer.kafka.partitioning import default_partitions
from stream_trainer.ops.queries import MAX_SCAN, Queries, VersionSource

PARTITIONS = 4


def _rule(key: str, status: str = "active") -> bytes:
    wire = {"rule_id": key, "version": 1, "status": status}
    return json.dumps(wire, separators=(",", ":")).encode()  # compact, as msgspec writes


def _queries(keys: dict[str, str], owned: set[int]) -> Queries:
    held: dict[int, dict[bytes, bytes]] = {p: {} for p in owned}
    names = [key.encode() for key in keys]
    partitions = default_partitions(names, PARTITIONS).tolist()
    for (key, status), partition in zip(keys.items(), partitions, strict=True):
        if partition in held:
            held[partition][key.encode()] = _rule(key, status)
    source = VersionSource(
        {"rules": "rv", "models": "mv"},
        lambda: PARTITIONS,
        lambda topic: held if topic == "rv" else {p: {} for p in owned},
    )
    return Queries(source)


def _partition(key: str) -> int:
    return int(default_partitions([key.encode()], PARTITIONS)[0])


async def test_a_key_of_an_owned_partition_answers_its_wire_json() -> None:
    key = "rule.momentum/spx %"
    queries = _queries({key: "active"}, owned={_partition(key)})
    answer = await queries.answer("/v1/rules/rule.momentum%2Fspx%20%25", "")
    assert answer is not None and answer.status == 200
    assert answer.body == _rule(key)


async def test_not_owned_or_unknown_is_404_naming_the_partition() -> None:
    key = "rule.a"
    mine = _partition(key)
    elsewhere = _queries({key: "active"}, owned={(mine + 1) % PARTITIONS})
    answer = await elsewhere.answer("/v1/rules/rule.a", "")
    assert answer is not None and answer.status == 404
    assert json.loads(answer.body)["partition"] == mine
    unknown = await _queries({}, owned={mine}).answer("/v1/rules/rule.a", "")
    assert unknown is not None and unknown.status == 404
    assert json.loads(unknown.body) == {"error": "unknown rule 'rule.a'", "partition": mine}


async def test_listing_pages_in_key_order_with_a_status_filter() -> None:
    keys = {f"rule.{i:03d}": ("retired" if i % 3 == 0 else "active") for i in range(50)}
    queries = _queries(keys, owned=set(range(PARTITIONS)))
    seen: list[str] = []
    after = ""
    while True:
        answer = await queries.answer("/v1/rules", f"status=retired&limit=4&after={after}")
        assert answer is not None and answer.status == 200
        page = json.loads(answer.body)
        seen += [item["rule_id"] for item in page["items"]]
        if page["next"] is None:
            break
        after = page["next"]
    assert seen == sorted(k for k, s in keys.items() if s == "retired")


async def test_listing_stops_after_a_bounded_scan() -> None:
    keys = {f"r{i:06d}": "active" for i in range(MAX_SCAN + 10)}
    queries = _queries(keys, owned=set(range(PARTITIONS)))
    answer = await queries.answer("/v1/rules", "status=retired&limit=10")
    assert answer is not None
    page = json.loads(answer.body)
    assert page["items"] == [] and page["next"] is not None  # scanned MAX_SCAN, go on


async def test_bad_parameters_are_400_and_other_paths_are_not_ours() -> None:
    queries = _queries({}, owned={0})
    for query in ("limit=0", "limit=x", "status=unknown"):
        answer = await queries.answer("/v1/rules", query)
        assert answer is not None and answer.status == 400
    models = await queries.answer("/v1/models", "status=retired")
    assert models is not None and models.status == 400
    assert await queries.answer("/v2/rules", "") is None
    assert await queries.answer("/v1/other", "") is None
