"""The models one server serves: the default (--checkpoint, else the built-in LoRAT) plus every
`--model NAME=PATH[,key=value...]` (repeatable), each behind its own executor; tracks name theirs in
StartTrack.model. A model id is `NAME@<sha256 of the file, 12 hex>`: another replica loading the same file
gets the same id, which is how a stored track finds its model again.

    --model mf=mixformerv2_small.pth.tar                          # the authors' LaSOT settings
    --model mf-tn=mixformerv2_small.pth.tar,update_interval=25,search_factor=4.55   # tracker parameters
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    path: Path
    params: dict[str, Any] = field(default_factory=dict)  # tracker parameters, e.g. update_interval


def _value(raw: str) -> Any:
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw


def parse_model_spec(spec: str) -> ModelSpec:
    """`NAME=PATH[,key=value...]` -> ModelSpec; the message says what is wrong (no file access here)."""
    name, sep, rest = spec.partition("=")
    name = name.strip()
    if not sep or not rest.strip():
        raise ValueError(f"--model {spec!r}: expected NAME=PATH[,key=value...]")
    if not NAME.fullmatch(name) or "@" in name:
        raise ValueError(f"--model {spec!r}: the name must be 1-64 letters, digits, '_', '.', '-'")
    path, *pairs = rest.split(",")
    params: dict[str, Any] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"--model {name}: tracker parameter {pair!r} is not key=value")
        params[key.strip()] = _value(value.strip())
    return ModelSpec(name=name, path=Path(path.strip()), params=params)


def parse_model_specs(specs: tuple[str, ...] | list[str]) -> list[ModelSpec]:
    out = [parse_model_spec(s) for s in specs]
    names = [m.name for m in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"--model names must be unique: {', '.join(dupes)}")
    return out


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


def model_id(name: str, path: Path) -> str:
    return f"{name}@{file_digest(path)}"


def load_engines(specs: list[ModelSpec], default_id: str, device: str, precision: str,
                 compile: bool | None = None) -> dict[str, Any]:
    """model id -> TrackingEngine for every `--model` (the default model's engine is built by the caller)."""
    from lorat_infer import TrackingEngine, load_model

    engines: dict[str, Any] = {}
    for spec in specs:
        if spec.name == default_id.split("@")[0]:
            raise ValueError(f"--model {spec.name}: the default model is already called {spec.name!r}")
        if not spec.path.is_file():
            raise FileNotFoundError(f"--model {spec.name}: no such file: {spec.path}")
        engine = TrackingEngine(load_model(spec.path), device=device, precision=precision, compile=compile,
                                params=spec.params or None)
        engines[model_id(spec.name, spec.path)] = engine
    return engines
