"""Read and write Darknet ``.cfg`` files.

``parse_cfg`` turns text into a :class:`Cfg` of typed sections once; nothing downstream reads
strings again. ``format_cfg`` is its mirror image: writing then re-reading gives an equal
``Cfg`` (line numbers aside), with uninterpreted Darknet keys kept verbatim.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass
from pathlib import Path

from common.io import atomic_write_text, read_text

from .errors import CfgError
from .sections import (
    REQUIRED,
    SECTION_ALIASES,
    SECTION_TYPES,
    NetSection,
    Section,
)


@dataclass(frozen=True)
class Cfg:
    """A parsed network: the ``[net]`` section and the layers in order."""

    net: NetSection
    layers: tuple[Section, ...]
    path: str = dataclasses.field(default="<cfg>", compare=False)

    def require_heads(self, purpose: str) -> None:
        """Raise unless the cfg has a [yolo] head; ``purpose`` names who needs one."""
        if not any(s.HEAD for s in self.layers):
            raise CfgError(f"no [yolo] layer: {purpose} needs at least one detection head",
                           self.path)

    def replace_layer(self, index: int, section: Section) -> Cfg:
        layers = list(self.layers)
        layers[index] = section
        return dataclasses.replace(self, layers=tuple(layers))


# ---------------------------------------------------------------- reading

@dataclass
class _RawSection:
    name: str
    line: int
    items: list[tuple[str, str, int]]  # (key, value, line)


def _split_sections(text: str, path: str) -> list[_RawSection]:
    sections: list[_RawSection] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            if not line.endswith("]") or len(line) < 3:
                raise CfgError(f"malformed section header {line!r}", path, lineno)
            sections.append(_RawSection(line[1:-1].strip().lower(), lineno, []))
            continue
        if "=" not in line:
            raise CfgError(f"expected 'key=value', got {line!r}", path, lineno)
        if not sections:
            raise CfgError(f"key {line!r} before the first [section]", path, lineno)
        k, v = (s.strip() for s in line.split("=", 1))
        sections[-1].items.append((k, v, lineno))
    return sections


def _parse_value(text: str, annotation, choices) -> object:
    """Convert one cfg value according to the field's type annotation."""
    hint = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else ()
    base = next((h for h in hint if h is not type(None)), annotation) if hint else annotation
    origin = typing.get_origin(base)
    if origin is tuple:
        item_type = typing.get_args(base)[0]
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if not parts:
            raise ValueError("expected a comma-separated list")
        return tuple(_scalar(p, item_type) for p in parts)
    value = _scalar(text, base)
    if choices and value not in choices:
        raise ValueError(f"expected one of {', '.join(map(str, choices))}")
    return value


def _scalar(text: str, kind):
    if kind is int:
        return int(text)
    if kind is float:
        return float(text)
    if kind is str:
        if not text:
            raise ValueError("empty value")
        return text
    raise TypeError(f"unsupported field type {kind}")


def _suggest(word: str, options) -> str:
    close = difflib.get_close_matches(word, sorted(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _build_section(raw: _RawSection, index: int, path: str) -> Section:
    name = SECTION_ALIASES.get(raw.name, raw.name)
    cls = SECTION_TYPES.get(name)
    if cls is None:
        raise CfgError(
            f"unknown section [{raw.name}]{_suggest(raw.name, SECTION_TYPES)}", path, raw.line
        )
    keys = cls.keys()
    hints = typing.get_type_hints(cls)
    values: dict[str, object] = {}
    extra: list[tuple[str, str]] = []
    given: set[str] = set()
    for k, v, lineno in raw.items:
        if k in given:
            raise CfgError(f"[{name}] key '{k}' given twice", path, lineno)
        given.add(k)
        f = keys.get(k)
        if f is None:
            if k in cls.PASSTHROUGH:
                extra.append((k, v))
                continue
            options = set(keys) | cls.PASSTHROUGH
            raise CfgError(f"[{name}] unknown key '{k}'{_suggest(k, options)}", path, lineno)
        try:
            values[f.name] = _parse_value(v, hints[f.name], f.metadata["choices"])
        except ValueError as e:
            raise CfgError(f"[{name}] bad value {k}={v!r}: {e}", path, lineno) from None
    for k, f in keys.items():
        if f.default is REQUIRED and f.name not in values:
            raise CfgError(f"[{name}] missing required key '{k}'", path, raw.line)
    section = cls(line=raw.line, index=index, extra=tuple(extra), given=frozenset(given),
                  **values)
    return _resolve_indices(section, path)


def _resolve_indices(section: Section, path: str) -> Section:
    """Turn relative layer references (``REFS``) into absolute ones, checking their range."""
    if not section.REFS:
        return section
    resolved, relative = [], []
    for ref in section.refs:
        target = section.index + ref if ref < 0 else ref
        if not 0 <= target < section.index:
            raise CfgError(
                f"[{section.kind}] {section.refs_key()}={ref} is out of range: layer "
                f"{section.index} can only refer to layers 0..{section.index - 1}",
                path, section.line,
            )
        resolved.append(target)
        relative.append(ref < 0)
    return dataclasses.replace(section.with_refs(tuple(resolved)), relative=tuple(relative))


def parse_cfg_text(text: str, path: str = "<cfg>") -> Cfg:
    raws = _split_sections(text.removeprefix("\ufeff"), path)  # a BOM (Notepad) is no key
    if not raws:
        raise CfgError("no sections found", path)
    first = SECTION_ALIASES.get(raws[0].name, raws[0].name)
    if first != "net":
        raise CfgError(f"the first section must be [net], got [{raws[0].name}]", path,
                       raws[0].line)
    for raw in raws[1:]:
        if SECTION_ALIASES.get(raw.name, raw.name) == "net":
            raise CfgError("[net] may appear only once, as the first section", path, raw.line)
    net = _build_section(raws[0], -1, path)
    layers = tuple(_build_section(raw, i, path) for i, raw in enumerate(raws[1:]))
    if not layers:
        raise CfgError("the cfg has no layers after [net]", path)
    _check_heads_agree(layers, path)
    return Cfg(net=net, layers=layers, path=path)


def _check_heads_agree(layers: tuple[Section, ...], path: str) -> None:
    """Every [yolo] head detects the same classes: one loss, one label set, one NMS."""
    heads = [s for s in layers if s.HEAD]
    for head in heads[1:]:
        if head.classes != heads[0].classes:
            raise CfgError(f"[yolo] classes={head.classes}, but the [yolo] at line "
                           f"{heads[0].line} has classes={heads[0].classes}: every head must "
                           "detect the same classes", path, head.line)


def parse_cfg(path: str | Path) -> Cfg:
    return parse_cfg_text(read_text(path, "cfg"), str(path))


# ---------------------------------------------------------------- writing

def _format_value(value) -> str:
    if isinstance(value, tuple):
        return ", ".join(_format_value(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _section_items(section: Section) -> list[tuple[str, str]]:
    items = []
    for k, f in section.keys().items():
        value = getattr(section, f.name)
        if value is None:
            continue
        if k not in section.given and value == f.default:
            continue  # leave Darknet's default implicit, as the user did
        if f.name == section.REFS:
            value = tuple(
                v - section.index if rel else v
                for v, rel in zip(value, section.relative or (False,) * len(value), strict=True)
            )
        items.append((k, _format_value(value)))
    return items + list(section.extra)


def format_cfg(cfg: Cfg) -> str:
    blocks = []
    for section in (cfg.net, *cfg.layers):
        lines = [f"[{section.kind}]"] + [f"{k}={v}" for k, v in _section_items(section)]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def write_cfg(cfg: Cfg, path: str | Path) -> None:
    """Write ``cfg`` to ``path`` atomically (temporary file, then rename)."""
    atomic_write_text(path, format_cfg(cfg))
