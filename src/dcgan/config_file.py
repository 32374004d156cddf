"""`dcgan train --config FILE.toml`: TrainConfig values from a TOML file, and the resolved config printed back.

    # celeba.toml: keys are TrainConfig field names (config.py); dashes work as well as underscores
    data = "img_align_celeba.zip"
    image-size = 64
    channels = 3
    epochs = 5

Flags given on the command line override the file; the file overrides the defaults. Unknown keys
and values of the wrong type are refused with one line naming the key. TOML has no null: leave a
key out to keep its default (for image_size, channels, ngf, ndf: chosen from the data).
`dcgan train --print-config` writes a file in this format, so a run's settings can be saved and reused.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import sys
from pathlib import Path
from typing import Any

from .config import TrainConfig, field_types
from .errors import DcganError

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, published as a package before Python 3.11
    import tomli as tomllib

PRINT_FORMATS = ("toml", "json")


def _check_type(key: str, value: Any, expected: Any, path: Path) -> Any:
    """The value converted where TOML allows two spellings (an int for a float), else a DcganError."""
    if expected is bool:
        ok = isinstance(value, bool)
    elif expected is int:
        ok = isinstance(value, int) and not isinstance(value, bool)  # bool is an int subclass in Python
    elif expected is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif expected is str:
        ok = isinstance(value, str)
    else:
        return value  # a type this loader does not know: TrainConfig checks it
    if not ok:
        names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
        raise DcganError(f"{path}: {key} must be {names[expected]}, not {type(value).__name__} {value!r}")
    return value


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _codes_spelling(key: str, value: Any, path: Path) -> Any:
    """info-codes as TOML would write it, 10 or [10, 10], becomes the flag's text "10" or "10,10"."""
    if _whole(value):
        return str(value)
    if isinstance(value, list):
        if not value or not all(_whole(k) for k in value):
            raise DcganError(f"{path}: {key} must be categories per code, as 10, [10, 10] or \"10,10\", not {value!r}")
        return ",".join(str(k) for k in value)
    return value


def load_config_file(path: Path) -> dict:
    """The TrainConfig values set in a TOML file, keys normalised to field names, types checked."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            raw = tomllib.load(handle)
    except FileNotFoundError:
        raise DcganError(f"config file not found: {path}") from None
    except OSError as error:
        raise DcganError(f"cannot read config file {path}: {error.strerror or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise DcganError(f"{path} is not valid TOML: {error}") from None
    except UnicodeDecodeError:
        raise DcganError(f"{path} is not valid TOML: not UTF-8 text") from None
    types = field_types()  # Optional[...] unwrapped: TOML cannot say None
    values = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in types:
            close = difflib.get_close_matches(name, types, n=1)
            hint = f"; did you mean {close[0]}?" if close else f"; valid keys are the options of dcgan train: {', '.join(types)}"
            raise DcganError(f"{path}: unknown key '{key}'{hint}")
        if name in values:
            raise DcganError(f"{path}: {name} is given twice (as {name} and {name.replace('_', '-')})")
        if name == "info_codes":
            value = _codes_spelling(key, value, path)
        values[name] = _check_type(key, value, types[name], path)
    return values


def format_config(config: TrainConfig, fmt: str = "toml") -> str:
    """The config as TOML (loadable by --config; unset values as comments) or as JSON (None for unset)."""
    if fmt == "json":
        return config.to_json()
    if fmt != "toml":
        raise DcganError(f"unknown config format '{fmt}': use {' or '.join(PRINT_FORMATS)}")
    lines = ["# dcgan train --config FILE: the resolved configuration; command-line flags override it"]
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if value is None:
            lines.append(f"# {field.name} is unset: decided when the run starts (see dcgan train --help)")
        else:
            lines.append(f"{field.name} = {_toml_value(value)}")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)  # Python's int and float spellings (1e-05, inf, nan) are valid TOML
    # a JSON string is a TOML basic string once DEL, which JSON leaves bare, is escaped too
    return json.dumps(str(value), ensure_ascii=False).replace("\x7f", "\\u007f")
