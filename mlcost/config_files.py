"""Reading TOML/YAML configuration files into dicts, with errors that name the file.

Shared by the policy and the price catalog so both report a broken file the same way: the path,
the line when the parser knows it, and what went wrong. Never eval.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mlcost.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def read_config_file(path: str | Path, *, table: tuple[str, ...] = ()) -> dict[str, Any]:
    """Parse ``path`` (``.toml``, ``.yaml``/``.yml``) and return the table at ``table`` (e.g.
    ``("tool", "mlcost")`` for a pyproject.toml); a missing table is an empty dict."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise ConfigError("file not found", source=str(path)) from e
    except OSError as e:
        raise ConfigError(f"cannot read file: {e.strerror}", source=str(path)) from e
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigError(f"not valid YAML{where}: {getattr(e, 'problem', e)}", source=str(path)) from e
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"not valid TOML: {e}", source=str(path)) from e
    if not isinstance(data, dict):
        raise ConfigError(f"expected a table of settings, found {type(data).__name__}", source=str(path))
    for key in table:
        data = data.get(key, {})
        if not isinstance(data, dict):
            raise ConfigError("expected a table", source=str(path), field=".".join(table))
    return data


def validation_error(err: ValidationError, *, source: str, prefix: str = "") -> ConfigError:
    """Turn pydantic's error into one ConfigError that names the file, each field and what is allowed."""
    lines = []
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"])
        field = f"{prefix}{loc}" if loc else prefix.rstrip(".") or "(top level)"
        msg = "unknown key" if item["type"] == "extra_forbidden" else item["msg"]
        if item["type"] not in ("missing", "extra_forbidden") and "input" in item:
            msg += f" (got {item['input']!r})"
        lines.append(f"{field}: {msg}")
    error = ConfigError("invalid configuration:\n  " + "\n  ".join(lines), source=source)
    error.field = lines[0].split(":")[0] if lines else None
    return error
