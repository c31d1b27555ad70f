"""The configuration reference (docs/reference/config.md), generated from :mod:`maml_rl.config`.

Every field of the config dataclasses is followed by an attribute docstring. Python does not
keep those at run time, so they are read from the source with :mod:`ast`; types and defaults
come from the dataclasses themselves. One markdown table per section: key, type, default, doc.

    python -m maml_rl.config_reference > docs/reference/config.md   # regenerate
    python -m maml_rl.config_reference --check                      # exit 1 when stale
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import re
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from maml_rl import config as config_module
from maml_rl.config import Config

#: Where the generated page lives, relative to the repository root.
REFERENCE_PATH = Path("docs/reference/config.md")
REGENERATE = "python -m maml_rl.config_reference > docs/reference/config.md"


def read_docstrings(source: str) -> dict[str, dict[str, str]]:
    """``{class name: {field name: docstring}}`` of every class in ``source``; the class's own
    docstring is under the key ``""``."""
    docs: dict[str, dict[str, str]] = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef):
            continue
        entries = {"": ast.get_docstring(node) or ""}
        for stmt, following in zip(node.body, node.body[1:], strict=False):
            if (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                entries[stmt.target.id] = inspect.cleandoc(following.value.value)
        docs[node.name] = entries
    return docs


def _markdown(text: str) -> str:
    """A docstring as one line of a markdown table cell: rst literals become code spans."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text)  # :class:`X` -> `X`
    text = text.replace("``", "`")
    return " ".join(text.split()).replace("|", "\\|")


def _paragraphs(text: str) -> str:
    """A class docstring as markdown paragraphs."""
    blocks = [b for b in re.split(r"\n\s*\n", text) if b.strip()]
    return "\n\n".join(_markdown(b).replace("\\|", "|") for b in blocks)


def type_text(tp: Any) -> str:
    """A type annotation as a user reads it in YAML terms."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " \\| ".join(str(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_text(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {type_text(typing.get_args(tp)[0])}"
    if origin is dict:
        return "mapping"
    names = {int: "int", float: "float", bool: "bool", str: "string", type(None): "null"}
    return names.get(tp, str(tp))


def default_text(value: Any) -> str:
    """A default value written as it would be in a YAML config."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else '""'
    if isinstance(value, list):
        return "[" + ", ".join(default_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {default_text(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _table(cls: type, prefix: str, docs: dict[str, str], names: list[str]) -> list[str]:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for name in names:
        value = default_text(_default(fields[name]))
        choices = fields[name].metadata.get("choices")
        kind = " \\| ".join(choices) if choices is not None else type_text(hints[name])
        rows.append(
            f"| `{prefix}{name}` | {kind} | `{value}` "
            f"| {_markdown(docs.get(name, ''))} |"
        )
    return rows


def render() -> str:
    """The whole reference page as markdown (what docs/reference/config.md must hold)."""
    docs = read_docstrings(inspect.getsource(config_module))
    hints = typing.get_type_hints(Config)
    fields = dataclasses.fields(Config)
    sections = [f for f in fields if dataclasses.is_dataclass(hints[f.name])]
    top = [f.name for f in fields if not dataclasses.is_dataclass(hints[f.name])]
    lines = [
        "# Configuration reference",
        "",
        f"<!-- Generated from maml_rl/config.py; do not edit. Regenerate: {REGENERATE} -->",
        "",
        "Every key of a YAML config, with its type, default and documentation, as defined by the",
        "dataclasses of `maml_rl/config.py`. A config file sets any subset of them; the command",
        "line overrides any key as `section.key=value` (values are YAML). See the",
        "[training guide](../guide/training.md) for how configs are used.",
        "",
        "Sections: " + ", ".join(f"[`{f.name}`](#{f.name})" for f in sections) + ".",
        "",
        "## Top level",
        "",
        _paragraphs(docs["Config"][""]),
        "",
        *_table(Config, "", docs["Config"], top),
    ]
    for f in sections:
        cls = hints[f.name]
        names = [g.name for g in dataclasses.fields(cls)]
        lines += [
            "",
            f"## {f.name}",
            "",
            _paragraphs(docs[cls.__name__][""]),
            "",
            *_table(cls, f"{f.name}.", docs[cls.__name__], names),
        ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Print the reference, or with ``--check`` compare it with the file (exit 1 when stale)."""
    parser = argparse.ArgumentParser(
        prog="python -m maml_rl.config_reference",
        description="Print the configuration reference generated from maml_rl/config.py.",
    )
    parser.add_argument(
        "--check", nargs="?", const=str(REFERENCE_PATH), metavar="FILE",
        help=f"compare with FILE (default: {REFERENCE_PATH}) instead of printing; "
        "exit 1 when it differs",
    )
    args = parser.parse_args(argv)
    text = render()
    if args.check is None:
        sys.stdout.write(text)
        return 0
    path = Path(args.check)
    if not path.is_file() or path.read_text() != text:
        print(f"{path} is stale; regenerate it with: {REGENERATE}", file=sys.stderr)
        return 1
    print(f"{path} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
