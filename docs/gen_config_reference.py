"""Write docs/reference/config.md: every config group, option, key, default, type / range and description.

Read from the code, so the page cannot drift: keys, defaults and descriptions from the YAML files in conf/
(the comment on a key's line is its description), types and ranges from the signature of the class a node's
`_target_` names (`typing.get_type_hints(..., include_extras=True)`: an `Annotated[int, Field(ge=1)]` parameter
shows `int, >= 1` and the Field's description). `python docs/gen_config_reference.py` rewrites the page;
`--check` exits 1 when the page on disk differs from what the code gives (tests/test_docs.py runs that).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
PAGE = ROOT / "docs" / "reference" / "config.md"
# hydra/default.yaml is Hydra's own run settings (output dirs, the --help text); its launcher and sweeper are listed.
SKIP_FILES = ("hydra/default.yaml",)
LINE = re.compile(r"^(?P<indent>\s*)(?P<key>[\w@/.\-]+):(?P<value>[^#]*?)\s*(#\s?(?P<comment>.*))?$")
BOUNDS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<=", "multiple_of": "multiple of"}


@dataclass
class Entry:
    key: str
    default: str
    comment: str = ""
    target: str | None = None  # the `_target_` of the node holding this key
    type_text: str = ""


@dataclass
class Option:
    name: str
    header: str = ""
    entries: list[Entry] = field(default_factory=list)


def parse_yaml(path: Path) -> Option:
    """Keys as dotted paths with their raw default and line comment; the file's opening comment as its header."""
    option = Option(path.relative_to(CONF).with_suffix("").as_posix())
    header, stack, targets, last = [], [], {}, None
    package = package_of(path)
    block_indent = None  # inside a `key: |` block scalar: its lines are text, not keys
    for raw in path.read_text().splitlines():
        if not raw.strip():
            continue
        if block_indent is not None:
            if len(raw) - len(raw.lstrip()) > block_indent:
                continue
            block_indent = None
        stripped = raw.strip()
        if stripped.startswith("#"):
            if last is None and not stack:
                header.append(stripped.lstrip("#").strip())
            elif last is not None and len(raw) - len(raw.lstrip()) > len(last.key.split(".")[-1]):
                last.comment += " " + stripped.lstrip("#").strip()  # a comment continued on the next line
            continue
        if stripped.startswith("- ") or stripped == "defaults:":
            continue
        match = LINE.match(raw)
        if match is None:
            continue
        depth = len(match["indent"])
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parents = [k for _, k in stack]
        if parents and parents[0] == "defaults":
            continue
        key = ".".join([*package, *parents, match["key"]])
        value = match["value"].strip()
        if value.startswith(("|", ">")):
            block_indent = depth
            value = "(text)"
        if match["key"] == "_target_":
            targets[".".join(parents)] = value
            continue
        if not value:  # a mapping: its keys follow, indented
            stack.append((depth, match["key"]))
            last = None
            if match["comment"] and key != "defaults":
                option.entries.append(Entry(key, "", match["comment"].strip()))
            continue
        if key.startswith("defaults") or match["key"] == "_partial_":
            continue
        last = Entry(key, value, (match["comment"] or "").strip(), targets.get(".".join(parents)))
        option.entries.append(last)
    option.header = " ".join(h for h in header if not h.startswith("@package"))
    return option


def package_of(path: Path) -> list[str]:
    """Where the file's keys land in the composed config: its `# @package` line, else its group's path."""
    for line in path.read_text().splitlines()[:3]:
        if line.startswith("# @package"):
            package = line.split(maxsplit=2)[2].strip()
            return [] if package == "_global_" else package.split(".")
    group = path.relative_to(CONF).parent.as_posix()
    return [] if group == "." else group.split("/")


def describe_type(hint: object) -> str:
    """`int >= 1`, `float in [0, 1) | None`, `one of 'a', 'b'`, then the option's Field description after a dash."""
    text, descriptions = render_type(hint)
    described = [d for d in descriptions if d]
    return text + (f" — {described[-1]}" if described else "")  # the outermost: the one written for this option


def render_type(hint: object) -> tuple[str, list[str]]:
    """The type with its bounds, and the Field descriptions found on the way (outermost last)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        text, descriptions = render_type(args[0])
        bounds: dict[str, object] = {}
        for extra in args[1:]:
            for constraint in [extra, *getattr(extra, "metadata", [])]:
                for name in BOUNDS:
                    value = getattr(constraint, name, None)
                    if value is not None and type(constraint).__name__ != "FieldInfo":
                        bounds[name] = value
            descriptions.append(getattr(extra, "description", None))
        inner = args[0]
        if typing.get_origin(inner) in (typing.Union, types.UnionType) and bounds:  # bounds of the non-None part
            parts = [render_type(arg)[0] + ("" if arg is type(None) else bounds_text(bounds))
                     for arg in typing.get_args(inner)]
            return " | ".join(parts), descriptions
        return text + bounds_text(bounds), descriptions
    if origin in (typing.Union, types.UnionType):
        parts = [render_type(arg) for arg in args]
        return " | ".join(text for text, _ in parts), [d for _, ds in parts for d in ds]
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args), []
    if origin is not None and args:
        parts = [render_type(arg) for arg in args if arg is not Ellipsis]
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(text for text, _ in parts)}]", [d for _, ds in parts for d in ds]
    if hint is type(None):
        return "None", []
    if hint is object:
        return "any", []
    if isinstance(hint, type):
        return hint.__name__, []
    return str(hint).replace("typing.", "").replace("collections.abc.", ""), []


def bounds_text(bounds: dict[str, object]) -> str:
    low = next(((k, bounds[k]) for k in ("ge", "gt") if k in bounds), None)
    high = next(((k, bounds[k]) for k in ("le", "lt") if k in bounds), None)
    if low and high:
        return f" in {'[' if low[0] == 'ge' else '('}{low[1]}, {high[1]}{']' if high[0] == 'le' else ')'}"
    if low or high:
        name, value = low or high
        return f" {BOUNDS[name]} {value}"
    return f" multiple of {bounds['multiple_of']}" if "multiple_of" in bounds else ""


def signature_types(target: str) -> dict[str, str]:
    """Parameter name -> type text of the constructor `target` names; {} when it cannot be imported."""
    module_name, _, attr = target.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError):
        return {}
    init = obj.__init__ if inspect.isclass(obj) else obj
    try:
        hints = typing.get_type_hints(init, include_extras=True)
    except Exception:  # an annotation that names something not importable here: fall back to the text
        hints = {}
    types = {}
    for name, param in inspect.signature(init).parameters.items():
        if name in hints:
            types[name] = describe_type(hints[name])
        elif param.annotation is not inspect.Parameter.empty:
            types[name] = str(param.annotation)
    return types


def escape(text: str) -> str:
    return text.replace("|", "\\|")


def render() -> str:
    groups = sorted(p for p in CONF.iterdir() if p.is_dir())
    out = ["# Configuration reference\n\n",
           "Generated by `python docs/gen_config_reference.py` from `conf/` and the constructors' signatures; do not "
           "edit by hand (a test fails when this page is not what the code gives). Keys are as typed on the command "
           "line; a key a file does not list takes a `+` (`+trainer.limit_train_batches=5`). Defaults shown are the "
           "file's own: `${...}` values are filled in when the run is composed.\n\n",
           "## Top level (`conf/config.yaml`)\n\n"]
    out += table(parse_yaml(CONF / "config.yaml"))
    for group in groups:
        options = sorted(p for p in group.rglob("*.yaml") if p.relative_to(CONF).as_posix() not in SKIP_FILES)
        out.append(f"## `{group.name}`\n\n")
        out.append("Options: " + ", ".join(f"`{o.relative_to(group).with_suffix('').as_posix()}`" for o in options)
                   + "\n\n")
        for path in options:
            option = parse_yaml(path)
            out.append(f"### `{option.name}`\n\n")
            if option.header:
                out.append(escape(option.header) + "\n\n")
            out += table(option)
    return "".join(out)


def table(option: Option) -> list[str]:
    if not option.entries:
        return []
    cache: dict[str, dict[str, str]] = {}
    rows = ["| key | default | type / range | description |\n", "|---|---|---|---|\n"]
    for entry in option.entries:
        type_text = ""
        if entry.target:
            types = cache.setdefault(entry.target, signature_types(entry.target))
            type_text = types.get(entry.key.rsplit(".", 1)[-1], "")
        default = f"`{escape(entry.default)}`" if entry.default else ""
        rows.append(f"| `{entry.key}` | {default} | {escape(type_text)} | {escape(entry.comment)} |\n")
    rows.append("\n")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is not current")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    text = render()
    if args.check:
        current = PAGE.is_file() and PAGE.read_text() == text
        if not current:
            print(f"{PAGE.relative_to(ROOT)} is stale: run python docs/gen_config_reference.py")
        return 0 if current else 1
    PAGE.parent.mkdir(parents=True, exist_ok=True)
    PAGE.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
