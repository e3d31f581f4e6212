"""Reading TOML/YAML configuration files into dicts, with errors that name the file.

Shared by the policy, the price catalog and pipeline inspection so each reports a broken file the
same way: the path, the line when the parser knows it, and what went wrong. Never eval.

What is read is bounded, because these files come from anyone who can open a pull request: the
size of the file, the size of a YAML document once its aliases are expanded (a 5 KB "billion
laughs" file expands to billions of nodes), and the nesting depth (the parsers recurse). Text that
is not UTF-8, integers longer than Python will convert, and nesting too deep for the parser are
each a ConfigError naming the file.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mlcost.errors import ConfigError, shown

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

MAX_CONFIG_BYTES = 4 * 2**20  # a policy or price catalog is a few KB
MAX_YAML_NODES = 2_000_000  # scalars, lists and mappings of a document with every alias expanded


def read_text(path: str | Path, *, what: str = "file", max_bytes: int = MAX_CONFIG_BYTES) -> str:
    """The UTF-8 text of ``path``, at most ``max_bytes`` long; a ConfigError names the file otherwise."""
    path = Path(path)
    source = str(path)
    try:
        with path.open("rb") as fh:
            data = fh.read(max_bytes + 1)
    except FileNotFoundError as e:
        raise ConfigError(f"{what} not found", source=source) from e
    except IsADirectoryError as e:
        raise ConfigError(f"expected a {what}, found a directory", source=source) from e
    except OSError as e:
        raise ConfigError(f"cannot read the {what}: {e.strerror}", source=source) from e
    if len(data) > max_bytes:
        raise ConfigError(f"the {what} is larger than {max_bytes // 2**20} MiB; is it the right file?", source=source)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(f"not UTF-8 text (byte {data[e.start]:#04x} at line {line}); save it as UTF-8",
                          source=source) from e


def load_yaml_documents(
    text: str, *, source: str, max_nodes: int = MAX_YAML_NODES, syntax_hint: str = ""
) -> list[Any]:
    """Every document of a YAML stream (safe types only), refusing documents that expand past
    ``max_nodes`` through aliases, that refer to themselves, or that nest deeper than the parser
    can go."""
    import yaml

    class BoundedLoader(yaml.SafeLoader):
        def compose_document(self) -> Any:
            node = super().compose_document()
            _check_expansion(node, max_nodes, source)
            return node

    try:
        return list(yaml.load_all(text, Loader=BoundedLoader))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            f"not valid YAML{where}{syntax_hint}: {getattr(e, 'problem', None) or e}", source=source
        ) from e
    except ConfigError:
        raise
    except RecursionError:
        raise ConfigError("not a usable YAML file: nested too deeply", source=source) from None
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        raise ConfigError(f"not a usable YAML file: {_value_error(e)}", source=source) from e


def _value_error(e: ValueError) -> str:
    if "int_max_str_digits" in str(e) or "digits" in str(e):
        limit = getattr(sys, "get_int_max_str_digits", lambda: 4300)()
        return f"an integer has more than {limit:,} digits"
    return str(e)


def _check_expansion(root: Any, max_nodes: int, source: str) -> None:
    """Count the nodes of ``root`` as if every alias were copied out (each shared node counted once
    per reference), without expanding anything: a post-order walk with an explicit stack, since a
    deep document would overflow Python's recursion."""
    import yaml

    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = _children(node, yaml)
        if done:
            on_path.discard(key)
            size[key] = min(1 + sum(size[id(c)] for c in children), max_nodes + 1)
            if size[key] > max_nodes:
                raise ConfigError(
                    f"the YAML document expands to more than {max_nodes:,} values through its aliases "
                    "(&anchors and *references); refusing to read it",
                    source=source,
                )
            continue
        if key in size:
            continue
        if key in on_path:
            raise ConfigError("the YAML document refers to itself through an alias", source=source)
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in size)


def _children(node: Any, yaml: Any) -> list[Any]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def read_config_file(path: str | Path, *, table: tuple[str, ...] = ()) -> dict[str, Any]:
    """Parse ``path`` (``.toml``, ``.yaml``/``.yml``) and return the table at ``table`` (e.g.
    ``("tool", "mlcost")`` for a pyproject.toml); a missing table is an empty dict."""
    path = Path(path)
    source = str(path)
    text = read_text(path)
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        docs = [d for d in load_yaml_documents(text, source=source) if d is not None]
        if len(docs) > 1:
            raise ConfigError(f"expected one YAML document, found {len(docs)}", source=source)
        data = docs[0] if docs else {}
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"not valid TOML: {e}", source=source) from e
        except RecursionError:
            raise ConfigError("not a usable TOML file: nested too deeply", source=source) from None
        except ValueError as e:  # an integer of more digits than Python converts
            raise ConfigError(f"not a usable TOML file: {_value_error(e)}", source=source) from e
    if not isinstance(data, dict):
        raise ConfigError(f"expected a table of settings, found {type(data).__name__}", source=source)
    for key in table:
        data = data.get(key, {})
        if not isinstance(data, dict):
            raise ConfigError("expected a table", source=source, field=".".join(table))
    return data


def validation_error(err: ValidationError, *, source: str, prefix: str = "") -> ConfigError:
    """Turn pydantic's error into one ConfigError that names the file, each field and what is allowed."""
    lines = []
    for item in err.errors()[:20]:
        loc = ".".join(str(p) for p in item["loc"])
        field = f"{prefix}{loc}" if loc else prefix.rstrip(".") or "(top level)"
        msg = "unknown key" if item["type"] == "extra_forbidden" else item["msg"]
        original = (item.get("ctx") or {}).get("error")
        if isinstance(original, ConfigError):  # a validator's own message, without pydantic's prefix
            msg = original.detail
        elif item["type"] == "value_error" and original is not None:
            msg = str(original)
        elif item["type"] not in ("missing", "extra_forbidden") and "input" in item:
            msg += f" (got {shown(item['input'])})"
        lines.append(f"{field}: {msg}")
    error = ConfigError("invalid configuration:\n  " + "\n  ".join(lines), source=source)
    error.field = lines[0].split(":")[0] if lines else None
    return error
