"""The step artifact: one self-contained ``.onnx`` whose ``metadata_props`` describe it.

Metadata keys (values are strings; ``*`` = JSON):

====================  ==========================================================================
key                   value
====================  ==========================================================================
format                ``synthsleep-step``
schema_version        ``3`` (1: before the ``side`` input, 2: ``side`` without its context;
                      re-export such an artifact: ``synthsleep export --like``)
montage*              modality names, the row order of input ``x`` / ``present``
preprocess*           ``PreprocessParams.to_dict()`` the model was trained with
class_names*          ``{"stage": ["W", "N1", "N2", "N3", "REM"], "apnea": ..., "hypopnea": ...}``
inputs*               ``{name: {"dtype", "shape"}}`` with -1 for the batch axis; ``present`` is bool,
                      ``side`` float32 [B, 21] (``psg.side_features.SIDE_NAMES``;
                      NaN row: unknown)
outputs*              likewise for the outputs
states*               ``[{"name", "input", "output", "shape", "dtype", "batch_axis"}]``
thresholds*           decision thresholds, e.g. ``{"apnea": 0.5, "hypopnea": 0.5}``
provenance*           ``{"config", "data_fingerprint", "metrics", "git_commit", ...}``
content_hash          ``sha256:<hex>`` of the serialized model *without* this key
====================  ==========================================================================

No torch here: the live path reads artifacts with onnx + numpy only.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

log = logging.getLogger(__name__)

FORMAT = "synthsleep-step"
SCHEMA_VERSION = 3  # 2: input ``side`` (EEG side features, psg.side_features); 3: with their context
HASH_KEY = "content_hash"
JSON_KEYS = ("montage", "preprocess", "class_names", "inputs", "outputs", "states", "thresholds",
             "provenance")
REQUIRED_KEYS = ("format", "schema_version", *JSON_KEYS, HASH_KEY)
INPUT_NAMES = ("x", "present", "conv_state", "ssm_state", "side")
OUTPUT_NAMES = ("stage_prob", "apnea_prob", "hypopnea_prob", "conv_state_out", "ssm_state_out")


class ArtifactError(ValueError):
    """An artifact that cannot be used: unreadable, not ours, incomplete or tampered with."""


@dataclass(frozen=True)
class StateSpec:
    """One recurrent state tensor: fed as ``input``, returned as ``output``.

    ``shape`` has -1 at ``batch_axis`` (e.g. conv_state ``[L, -1, conv_dim, d_conv]``).
    """

    name: str
    input: str
    output: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    batch_axis: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "input": self.input, "output": self.output,
                "shape": list(self.shape), "dtype": self.dtype, "batch_axis": self.batch_axis}

    def shape_for(self, batch: int) -> tuple[int, ...]:
        return tuple(batch if i == self.batch_axis else d for i, d in enumerate(self.shape))


@dataclass(frozen=True)
class ArtifactInfo:
    """What an artifact's metadata says (see the module docstring for the keys)."""

    path: Path
    schema_version: int
    modalities: tuple[str, ...]
    preprocess: dict[str, Any]
    class_names: dict[str, Any]
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    states: tuple[StateSpec, ...]
    thresholds: dict[str, float]
    provenance: dict[str, Any]
    content_hash: str
    hash_ok: bool = True
    extra: dict[str, str] = field(default_factory=dict)  # unknown metadata keys, kept verbatim

    @property
    def stage_names(self) -> tuple[str, ...]:
        return tuple(self.class_names.get("stage", ()))

    @property
    def short_hash(self) -> str:
        """First 12 hex digits of the content hash (for logs and event records)."""
        return self.content_hash.split(":", 1)[-1][:12]


def compute_content_hash(model: onnx.ModelProto) -> str:
    """``sha256:<hex>`` of ``model`` serialized without its ``content_hash`` metadata entry."""
    clone = onnx.ModelProto()
    clone.CopyFrom(model)
    keep = [p for p in clone.metadata_props if p.key != HASH_KEY]
    del clone.metadata_props[:]
    clone.metadata_props.extend(keep)
    return "sha256:" + hashlib.sha256(clone.SerializeToString(deterministic=True)).hexdigest()


def set_metadata(model: onnx.ModelProto, props: dict[str, str]) -> None:
    """Replace ``model.metadata_props`` by ``props`` (in the given order)."""
    del model.metadata_props[:]
    for k, v in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v


def seal(model: onnx.ModelProto) -> str:
    """Compute the content hash and store it as the last metadata entry; returns it."""
    props = {p.key: p.value for p in model.metadata_props if p.key != HASH_KEY}
    set_metadata(model, props)
    digest = compute_content_hash(model)
    set_metadata(model, {**props, HASH_KEY: digest})
    return digest


def load_proto(source: str | Path | bytes) -> onnx.ModelProto:
    """Parse an artifact file (or its bytes) without touching external data."""
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    try:
        if isinstance(source, bytes):
            return onnx.load_from_string(source)
        return onnx.load(str(source), load_external_data=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"artifact {name} not found") from None
    except IsADirectoryError:
        raise ArtifactError(f"artifact {name} is a directory, not an .onnx file") from None
    except Exception as e:  # noqa: BLE001 - protobuf raises DecodeError and friends
        raise ArtifactError(f"artifact {name} is not a readable ONNX model: {e}") from None


def info_from_proto(model: onnx.ModelProto, path: str | Path = "<bytes>",
                    verify_hash: bool = True, any_schema: bool = False) -> ArtifactInfo:
    """Validate a parsed artifact's metadata and hash.

    ``any_schema``: read an artifact of an older (or newer) schema version too, for its record
    only (provenance, preprocessing, thresholds: ``synthsleep export --like``); it cannot be run.

    Raises:
        ArtifactError: not a synthsleep artifact, missing/invalid keys, external data, or (with
            ``verify_hash``) a content hash that does not match (the file was modified).
    """
    meta = {p.key: p.value for p in model.metadata_props}
    if meta.get("format") != FORMAT:
        raise ArtifactError(f"{path}: not a synthsleep step artifact (metadata format="
                            f"{meta.get('format')!r}, expected {FORMAT!r})")
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise ArtifactError(f"{path}: metadata lacks {missing}")
    try:
        version = int(meta["schema_version"])
    except ValueError:
        raise ArtifactError(f"{path}: schema_version {meta['schema_version']!r} is not an integer") from None
    if version != SCHEMA_VERSION and not any_schema:
        raise ArtifactError(f"{path}: schema_version {version} unsupported (this code reads {SCHEMA_VERSION}; "
                            f"re-export the model: synthsleep export MODEL --like {path} --out NEW.onnx)")
    parsed: dict[str, Any] = {}
    for k in JSON_KEYS:
        try:
            parsed[k] = json.loads(meta[k])
        except json.JSONDecodeError as e:
            raise ArtifactError(f"{path}: metadata {k!r} is not valid JSON: {e}") from None
    for init in model.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            raise ArtifactError(f"{path}: initializer {init.name!r} uses external data; an artifact "
                                f"must be one self-contained file")
    graph_in = [i.name for i in model.graph.input]
    graph_out = [o.name for o in model.graph.output]
    if not any_schema and (tuple(graph_in) != INPUT_NAMES or tuple(graph_out) != OUTPUT_NAMES):
        raise ArtifactError(f"{path}: graph inputs {graph_in} / outputs {graph_out}, expected "
                            f"{list(INPUT_NAMES)} / {list(OUTPUT_NAMES)}")
    try:
        states = tuple(StateSpec(s["name"], s["input"], s["output"], tuple(int(d) for d in s["shape"]),
                                 s.get("dtype", "float32"), int(s.get("batch_axis", 1)))
                       for s in parsed["states"])
    except (KeyError, TypeError, ValueError) as e:
        raise ArtifactError(f"{path}: metadata 'states' malformed: {e}") from None
    hash_ok = compute_content_hash(model) == meta[HASH_KEY]
    if verify_hash and not hash_ok:
        raise ArtifactError(f"{path}: content hash mismatch: metadata says {meta[HASH_KEY]}, the content "
                            f"hashes to {compute_content_hash(model)} (the file was modified after export)")
    extra = {k: v for k, v in meta.items() if k not in REQUIRED_KEYS}
    return ArtifactInfo(
        path=Path(path), schema_version=version, modalities=tuple(parsed["montage"]),
        preprocess=parsed["preprocess"], class_names=parsed["class_names"], inputs=parsed["inputs"],
        outputs=parsed["outputs"], states=states,
        thresholds={k: float(v) for k, v in parsed["thresholds"].items()},
        provenance=parsed["provenance"], content_hash=meta[HASH_KEY], hash_ok=hash_ok, extra=extra)


def read_artifact(path: str | Path, verify_hash: bool = True, any_schema: bool = False) -> ArtifactInfo:
    """Read and validate an artifact's metadata (and, by default, its content hash; ``any_schema``:
    see ``info_from_proto``)."""
    return info_from_proto(load_proto(path), path, verify_hash, any_schema)


def check_artifact(path: str | Path) -> ArtifactInfo:
    """``onnx.checker`` (full) plus metadata and hash validation; raises ArtifactError."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"artifact {path} not found")
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as e:
        raise ArtifactError(f"{path}: onnx.checker failed: {e}") from None
    except onnx.shape_inference.InferenceError as e:
        raise ArtifactError(f"{path}: ONNX shape inference failed: {e}") from None
    return read_artifact(path)
