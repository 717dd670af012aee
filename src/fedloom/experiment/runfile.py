"""Reading and writing run files: TOML text ↔ the :class:`~fedloom.experiment.Experiment` tree.

Reading checks the document's shape (tables where tables belong, no unknown keys, required keys
present) and leaves value checks to the spec classes, then places any error in the file.
Writing emits the tables in a fixed order, ``[[stages]]`` in data order, leaving out keys that
are unset (``None``), so that reading the text back gives an equal experiment.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomli_w

from fedloom.experiment import checks
from fedloom.experiment.data_spec import DataSpec, PartitionSpec
from fedloom.experiment.devices_spec import DevicesSpec
from fedloom.experiment.errors import ExperimentError, KeyPath, toml_syntax_error
from fedloom.experiment.policy_spec import federation_policy, site_policy
from fedloom.experiment.privacy_spec import PrivacySpec
from fedloom.experiment.specs import (
    AlgorithmSpec,
    BufferedSpec,
    ModelSpec,
    RunSpec,
    StageSpec,
    TargetSpec,
    TrainSpec,
)
from fedloom.policy import FederationPolicy, SitePolicy

if TYPE_CHECKING:
    from fedloom.experiment.experiment import Experiment

TOP_LEVEL = (
    "name", "description", "data", "model", "train", "algorithm", "stages", "run", "devices",
    "policy", "sites", "privacy",
)  # fmt: skip
"""The keys of a run file's top level, in the order they are written."""

PATH_OPTION = "path"


def parse(text: str, *, source: str, base_dir: Path | None) -> Experiment:
    """The experiment in TOML ``text``; errors name ``source`` and, where possible, the line."""
    from fedloom.experiment.experiment import Experiment, Origin

    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise toml_syntax_error(error, source) from None
    try:
        checks.no_unknown_keys((), document, TOP_LEVEL)
        stages = _required(document, (), "stages", default=[])
        if not isinstance(stages, list) or not all(isinstance(s, dict) for s in stages):
            raise ExperimentError(
                ("stages",),
                f"must be an array of tables ([[stages]] sections), got {checks.kind_of(stages)}",
            )
        return Experiment(
            name=_required(document, (), "name"),
            description=_required(document, (), "description", default=""),
            data=_data(_table(document, ("data",)), base_dir),
            model=ModelSpec(**_fields(_table(document, ("model",)), ModelSpec)),
            train=TrainSpec(**_fields(_table(document, ("train",)), TrainSpec)),
            algorithm=AlgorithmSpec(**_fields(_table(document, ("algorithm",)), AlgorithmSpec)),
            stages=tuple(_stage(table, index) for index, table in enumerate(stages)),
            run=_run(_table(document, ("run",))),
            devices=_devices(_table(document, ("devices",), optional=True), base_dir),
            policy=_policy(_table(document, ("policy",), optional=True)),
            sites=_sites(_required(document, (), "sites", default=[])),
            privacy=_privacy(_table(document, ("privacy",), optional=True)),
            origin=Origin(source, text),
        )
    except ExperimentError as error:
        raise error.at(source, text) from None


def _required(table: Mapping[str, Any], at: KeyPath, key: str, default: Any = ...) -> Any:
    if key in table:
        return table[key]
    if default is ...:
        raise ExperimentError((*at, key), "required, missing")
    return default


def _table(parent: Mapping[str, Any], at: KeyPath, *, optional: bool = False) -> Any:
    """The table at ``at`` (relative to ``parent``, whose own path is ``at[:-1]``)."""
    value = _required(parent, at[:-1], str(at[-1]), default=None if optional else ...)
    if value is not None and not isinstance(value, dict):
        raise ExperimentError(
            at, f"must be a table ([{'.'.join(map(str, at))}]), got {checks.kind_of(value)}"
        )
    return value


def _fields(
    table: Mapping[str, Any], spec: type[Any], keys: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Constructor arguments for ``spec`` from ``table``; keys that are not fields go to
    ``options`` where the spec has options, and are refused otherwise."""
    at: KeyPath = spec.SECTION
    names = keys or tuple(
        f.name for f in dataclasses.fields(spec) if f.init and f.name != "options"
    )
    has_options = "options" in {f.name for f in dataclasses.fields(spec)}
    if not has_options:
        checks.no_unknown_keys(at, table, names)
    for f in dataclasses.fields(spec):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and f.name in names and f.name not in table:
            # A required key that is missing is most often a typo of a key that is there.
            strays = [k for k in table if k not in names]
            checks.no_unknown_keys(at, difflib.get_close_matches(f.name, strays, n=1), names)
            raise ExperimentError((*at, f.name), "required, missing")
    arguments = {k: v for k, v in table.items() if k in names}
    if has_options:
        arguments["options"] = {k: v for k, v in table.items() if k not in names}
    return arguments


def _data(table: dict[str, Any], base_dir: Path | None) -> DataSpec:
    arguments = _fields(table, DataSpec, DataSpec.KEYS)
    partition = _table(table, ("data", "partition"), optional=True)
    if partition is not None:
        arguments["partition"] = PartitionSpec(**_fields(partition, PartitionSpec))
    path = arguments["options"].get(PATH_OPTION)
    if base_dir is not None and isinstance(path, str) and not Path(path).is_absolute():
        arguments["options"][PATH_OPTION] = str(Path(base_dir) / path)
    return DataSpec(**arguments)


def _stage(table: dict[str, Any], index: int) -> StageSpec:
    try:
        return StageSpec(**_fields(table, StageSpec))
    except ExperimentError as error:
        raise error.in_array("stages", index) from None


def _run(table: dict[str, Any]) -> RunSpec:
    arguments = _fields(table, RunSpec)
    target = _table(table, ("run", "target"), optional=True)
    if target is not None:
        arguments["target"] = TargetSpec(**_fields(target, TargetSpec))
    buffered = _table(table, ("run", "buffered"), optional=True)
    if buffered is not None:
        arguments["buffered"] = BufferedSpec(**_fields(buffered, BufferedSpec))
    return RunSpec(**arguments)


def _devices(table: dict[str, Any] | None, base_dir: Path | None) -> DevicesSpec | None:
    if table is None:
        return None
    return DevicesSpec(**_fields(table, DevicesSpec)).resolved(base_dir)


def _policy(table: dict[str, Any] | None) -> FederationPolicy | None:
    return None if table is None else federation_policy(table)


def _sites(tables: Any) -> tuple[SitePolicy, ...]:
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ExperimentError(
            ("sites",),
            f"must be an array of tables ([[sites]] sections), got {checks.kind_of(tables)}",
        )
    return tuple(site_policy(table, index) for index, table in enumerate(tables))


def _privacy(table: dict[str, Any] | None) -> PrivacySpec | None:
    return None if table is None else PrivacySpec(**_fields(table, PrivacySpec))


def dump(experiment: Experiment) -> str:
    """The experiment as run-file text."""
    head: dict[str, Any] = {"name": experiment.name}
    if experiment.description:
        head["description"] = experiment.description
    sections = [tomli_w.dumps(head)]
    for key in ("data", "model", "train", "algorithm"):
        sections.append(tomli_w.dumps({key: _plain(getattr(experiment, key))}))
    for stage in experiment.stages:
        sections.append("[[stages]]\n" + tomli_w.dumps(_plain(stage)))
    sections.append(tomli_w.dumps({"run": _plain(experiment.run)}))
    if experiment.devices is not None:
        sections.append(tomli_w.dumps({"devices": _plain(experiment.devices)}))
    if experiment.policy is not None:
        sections.append(tomli_w.dumps({"policy": _plain(experiment.policy)}))
    for site in experiment.sites:
        sections.append("[[sites]]\n" + tomli_w.dumps(_plain(site)))
    if experiment.privacy is not None:
        sections.append(tomli_w.dumps({"privacy": _plain(experiment.privacy)}))
    return "\n".join(sections)


def _plain(spec: Any) -> dict[str, Any]:
    """A spec as a TOML table: unset keys left out, options inline, arrays as lists."""
    table: dict[str, Any] = {}
    nested: dict[str, Any] = {}
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        if value is None or not f.compare:
            continue
        if f.name == "options":
            table.update({k: _value(v) for k, v in value.items()})
        elif dataclasses.is_dataclass(value):
            nested[f.name] = _plain(value)
        else:
            table[f.name] = _value(value)
    return table | nested


def _value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple | list) else value
