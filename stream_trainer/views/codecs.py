"""Compact fixed-layout packing of one key's latest version (what a view keeps per key).

A decoded msgspec Struct costs ~1 kB per key (the object, two datetimes, boxed floats, the
id string again); the wire JSON ~300 bytes. Packing the fields into one little-endian
``bytes`` (73 bytes for a rule) keeps a view of 100k rules near 20 MB, and unpacking one key
on `get` is a single `struct.unpack` (~1 µs). The id is the record key, so it is not packed.
Every packed layout starts with the version as int64, so ordering needs no unpacking.

Timestamps are kept as exact microseconds since the epoch and come back in UTC (an equal
instant; the trainer always publishes UTC).
"""

from __future__ import annotations

import struct
from typing import Final, Generic, Protocol, TypeVar, get_args

import msgspec

from stream_trainer.events import ModelVersion, RuleStatus, RuleVersion, from_ts_us, ts_us

V = TypeVar("V", RuleVersion, ModelVersion)
T = TypeVar("T")

_VERSION: Final = struct.Struct("<q")
_STATUSES: Final[tuple[RuleStatus, ...]] = get_args(RuleStatus)
_STATUS_CODE: Final = {status: code for code, status in enumerate(_STATUSES)}
# version, alpha, beta, trust, trust_low, trust_high, evidence, status, trained_through,
# published_at (the last two in microseconds since the epoch).
_RULE: Final = struct.Struct("<q6dBqq")
# version, order, n_observations, mse, baseline_mse, has_skill, skill, trained_through,
# published_at; then the coefficients as float64, as many as the bytes left hold.
_MODEL: Final = struct.Struct("<qqqdd?dqq")


class Codec(Protocol[T]):
    """How a view decodes, keys, packs and unpacks one version type."""

    kind: str

    def decode(self, raw: bytes) -> T: ...
    def key_of(self, version: T) -> str: ...
    def pack(self, version: T) -> bytes: ...
    def unpack(self, key: str, packed: bytes) -> T: ...


def packed_version(packed: bytes) -> int:
    """The version number at the head of every packed layout."""
    version: int = _VERSION.unpack_from(packed)[0]
    return version


class _StructCodec(Generic[V]):
    def __init__(self, version_type: type[V]) -> None:
        # One compiled decoder per codec, reused for every record.
        self._decoder: msgspec.json.Decoder[V] = msgspec.json.Decoder(version_type)

    def decode(self, raw: bytes) -> V:
        """Decode one wire record; raises msgspec.DecodeError / ValidationError."""
        return self._decoder.decode(raw)


class RuleCodec(_StructCodec[RuleVersion]):
    kind = "rule"

    def __init__(self) -> None:
        super().__init__(RuleVersion)

    def key_of(self, version: RuleVersion) -> str:
        return version.rule_id

    def pack(self, v: RuleVersion) -> bytes:
        return _RULE.pack(
            v.version,
            v.alpha,
            v.beta,
            v.trust,
            v.trust_low,
            v.trust_high,
            v.evidence,
            _STATUS_CODE[v.status],
            ts_us(v.trained_through),
            ts_us(v.published_at),
        )

    def unpack(self, key: str, packed: bytes) -> RuleVersion:
        version, alpha, beta, trust, low, high, evidence, status, trained, published = _RULE.unpack(
            packed
        )
        return RuleVersion(
            rule_id=key,
            version=version,
            alpha=alpha,
            beta=beta,
            trust=trust,
            trust_low=low,
            trust_high=high,
            evidence=evidence,
            status=_STATUSES[status],
            trained_through=from_ts_us(trained),
            published_at=from_ts_us(published),
        )


class ModelCodec(_StructCodec[ModelVersion]):
    kind = "model"

    def __init__(self) -> None:
        super().__init__(ModelVersion)

    def key_of(self, version: ModelVersion) -> str:
        return version.model_id

    def pack(self, v: ModelVersion) -> bytes:
        head = _MODEL.pack(
            v.version,
            v.order,
            v.n_observations,
            v.mse,
            v.baseline_mse,
            v.skill is not None,
            0.0 if v.skill is None else v.skill,
            ts_us(v.trained_through),
            ts_us(v.published_at),
        )
        return head + struct.pack(f"<{len(v.coefficients)}d", *v.coefficients)

    def unpack(self, key: str, packed: bytes) -> ModelVersion:
        version, order, n_obs, mse, baseline, has_skill, skill, trained, published = (
            _MODEL.unpack_from(packed)
        )
        n_coefficients = (len(packed) - _MODEL.size) // 8
        coefficients = struct.unpack_from(f"<{n_coefficients}d", packed, _MODEL.size)
        return ModelVersion(
            model_id=key,
            version=version,
            order=order,
            coefficients=list(coefficients),
            n_observations=n_obs,
            mse=mse,
            baseline_mse=baseline,
            skill=skill if has_skill else None,
            trained_through=from_ts_us(trained),
            published_at=from_ts_us(published),
        )


RULES: Final = RuleCodec()
MODELS: Final = ModelCodec()
