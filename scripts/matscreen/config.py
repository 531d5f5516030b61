"""Loading and validating ``config/config.yaml``.

The JSON schema in ``workflow/schemas/config.schema.yaml`` is the one definition of the
configuration: Snakemake validates with it (``snakemake.utils.validate``) and so does the
command line, so both fill in the same defaults and reject the same mistakes. Checks a
schema cannot express (element symbols, family names, oxidation states pymatgen knows)
live in :func:`check_semantics` and name the offending key.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import typing
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import jsonschema
import yaml

from matscreen.provenance import stable_hash

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"
DEFAULT_CONFIG = REPO_ROOT / "config" / "config.yaml"


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key."""


def load_schema() -> dict[str, Any]:
    """The config schema (a fresh copy: callers may modify it)."""
    return copy.deepcopy(_parsed_schema())


@cache
def _parsed_schema() -> dict[str, Any]:
    """Parsed once per process: validation and each stage's settings read it (three parses cost
    about 1.1 s of the controller's start with the pure-Python parser)."""
    with open(SCHEMA_PATH) as fh:
        return yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _is_finite_number(checker: Any, instance: Any) -> bool:
    """``type: number`` means a finite number: ``.nan`` and ``.inf`` pass JSON-schema's own check
    (and every ``minimum``), then turn scores into NaN and rankings into candidate-id order."""
    return jsonschema.Draft202012Validator.TYPE_CHECKER.is_type(instance, "number") and math.isfinite(instance)


def _is_strict_integer(checker: Any, instance: Any) -> bool:
    """``type: integer`` means an int: JSON-schema accepts 2.0, which later fails ``range(2.0)``."""
    return isinstance(instance, int) and not isinstance(instance, bool)


_TYPE_CHECKER = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many(
    {"number": _is_finite_number, "integer": _is_strict_integer}
)


def _message(err: jsonschema.ValidationError) -> str:
    """The schema's message, reworded where the strict number types above refused a value."""
    if err.validator == "type" and isinstance(err.instance, float):
        types = err.validator_value if isinstance(err.validator_value, list) else [err.validator_value]
        if not math.isfinite(err.instance):
            return f"must be a finite number, got {err.instance!r}"
        if "integer" in types and err.instance.is_integer():
            return f"must be an integer, got {err.instance!r} (write {int(err.instance)})"
    return err.message


def _with_defaults(validator_class: type) -> type:
    validate_props = validator_class.VALIDATORS["properties"]

    def set_defaults(validator: Any, properties: Mapping[str, Any], instance: Any, schema: Any) -> Any:
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if "default" in sub and prop not in instance:
                    instance[prop] = _copy(sub["default"])
        yield from validate_props(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults}, type_checker=_TYPE_CHECKER)


def _copy(obj: Any) -> Any:
    return yaml.safe_load(yaml.safe_dump(obj))


@cache
def _section_validator(name: str) -> Any:
    return _with_defaults(jsonschema.Draft202012Validator)(load_schema()["properties"][name])


def resolve_section(name: str, settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """A deep copy of config section ``name`` with the schema's defaults filled in, validated.

    Stage functions accept ``{}`` or a partial section (tests, the Python API, a ``--settings``
    file) and behave exactly as with a validated config. Raises :class:`ConfigError` naming the key.
    """
    out = _copy(dict(settings or {}))
    errors = sorted(_section_validator(name).iter_errors(out), key=lambda e: list(e.absolute_path))
    if errors:
        msgs = [f"config key '{'.'.join([name, *map(str, e.absolute_path)])}': {_message(e)}" for e in errors[:10]]
        raise ConfigError(f"invalid {name} settings:\n  " + "\n  ".join(msgs))
    return out


S = TypeVar("S")


def build_settings(cls: type[S], name: str, section: Mapping[str, Any] | S | None) -> S:
    """The frozen settings dataclass ``cls`` of config section ``name``, resolved once.

    ``section`` is the (partial) config section: the schema fills its defaults and validates it
    (:func:`resolve_section`), and the result becomes ``cls``, whose fields are the section's keys
    (a field whose type is itself a dataclass takes the nested section; lists become tuples).
    An instance of ``cls`` is returned as it is: settings are resolved at the edge (Snakemake
    adapter, CLI, test) and then passed down, never re-read or re-validated. The schema stays
    the only place defaults live: ``cls`` declares fields, not defaults.
    """
    if isinstance(section, cls):
        return section
    return _to_dataclass(cls, resolve_section(name, section), name)


def _to_dataclass(cls: type[S], data: Mapping[str, Any], where: str) -> S:
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - fields)
    if unknown:  # the schema has keys the dataclass does not declare: a programming error
        raise TypeError(f"{cls.__name__} has no field for config key(s) {', '.join(f'{where}.{k}' for k in unknown)}")
    kw = {}
    for key in fields:
        value = data[key]
        hint = hints[key]
        if dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
            value = _to_dataclass(hint, value, f"{where}.{key}")
        kw[key] = _typed(hint, _freeze(value))
    return cls(**kw)


def _typed(hint: Any, value: Any) -> Any:
    """``value`` as the field's declared number type: a YAML ``100`` in a ``float`` field becomes
    ``100.0`` (also inside ``float | None`` and ``tuple[float, ...]``), so that ``ke_cutoff: 100``
    and ``ke_cutoff: 100.0`` are the same setting and hash the same."""
    args = typing.get_args(hint)
    if hint is float or (float in args and type(None) in args):
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if typing.get_origin(hint) is tuple and args[-1:] == (Ellipsis,) and args[0] is float and isinstance(value, tuple):
        return tuple(_typed(float, v) for v in value)
    return value


def _freeze(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def settings_dict(settings: Any) -> dict[str, Any]:
    """A settings dataclass back as the plain section dict (tuples as lists): the input of hashes
    and provenance, identical to the resolved config section it was built from."""
    return _thaw(dataclasses.asdict(settings))


def _thaw(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_thaw(v) for v in value]
    return value


def _key_path(err: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in err.absolute_path) or "<top level>"


def validate(config: dict[str, Any]) -> dict[str, Any]:
    """Fill defaults and validate ``config`` in place; raise :class:`ConfigError` naming the key."""
    schema = load_schema()
    cls = _with_defaults(jsonschema.Draft202012Validator)
    errors = sorted(cls(schema).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        msgs = [f"config key '{_key_path(e)}': {_message(e)}" for e in errors[:10]]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(msgs))
    check_semantics(config)
    return config


def check_semantics(config: dict[str, Any]) -> None:
    """The config checks a JSON schema cannot express (element symbols, family names, oxidation
    states pymatgen knows, ...), one function per stage; each raises :class:`ConfigError`
    naming the key. Imported here, not at module level: the stage modules import this one.

    The Snakemake controller runs these (and every cluster job re-runs them when it re-reads the
    Snakefile), so they are light: no LightGBM, matminer, scikit-learn, SciPy or PySCF is imported;
    pymatgen only for its element and oxidation-state tables (enumerate)."""
    from matscreen import enumerate as enumerate_stage
    from matscreen import featurize, rounds
    from matscreen.label.checks import check_label_config
    from matscreen.train.checks import check_screen, check_train

    SEMANTIC_CHECKS: list[Callable[[dict[str, Any]], None]] = [  # noqa: N806 (a constant list)
        enumerate_stage.check_config,
        enumerate_stage.check_mixing,
        check_label_config,
        featurize.check_config,
        check_train,
        check_screen,
        rounds.check_config,
    ]
    for check in SEMANTIC_CHECKS:
        check(config)


def load_config(
    path: str | os.PathLike[str] | None = None, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Read a YAML config (default: the shipped one), apply overrides, validate."""
    path = Path(path) if path else DEFAULT_CONFIG
    try:
        with open(path) as fh:
            config = yaml.safe_load(fh) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    for key, value in (overrides or {}).items():
        config[key] = value
    return validate(config)


def config_hash(config: Mapping[str, Any]) -> str:
    return stable_hash(dict(config))
