"""Griffe extension for the API reference: pabt_tf's docstrings are Markdown with
`# Arguments`, `# Returns`, `# Raises` and `# Attributes` sections whose entries are
indented (as Larq's). Rendered as they are, the indented entries would be code blocks; this
turns each section into a bold label and a list, entries' continuation lines joined.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_SECTION = re.compile(r"^#\s+(Arguments|Returns|Raises|Attributes|Example|Examples)\s*$")
_ENTRY = re.compile(r"^(\*{0,2}[\w.*, ]+?\*{0,2}):\s*(.*)$")


def _convert(text: str) -> str:
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _SECTION.match(lines[i].strip())
        if not match:
            out.append(lines[i])
            i += 1
            continue
        name = match.group(1)
        i += 1
        block: list[str] = []
        while i < len(lines) and (not lines[i].strip() or lines[i].startswith((" ", "\t"))):
            block.append(lines[i])
            i += 1
        while block and not block[-1].strip():
            block.pop()
        out += [f"**{name}**", ""]
        if name.startswith("Example"):
            out += block + [""]
            continue
        indent = min((len(b) - len(b.lstrip()) for b in block if b.strip()), default=0)
        items: list[str] = []
        for raw in block:
            if not raw.strip():
                continue
            line = raw[indent:]
            entry = None if line.startswith((" ", "\t")) else _ENTRY.match(line)
            if entry and name in ("Arguments", "Attributes", "Raises"):
                items.append(f"- `{entry.group(1)}`: {entry.group(2)}")
            elif line.startswith((" ", "\t")) and items:
                items[-1] += " " + line.strip()
            elif name == "Returns" and items:
                items[-1] += " " + line.strip()
            else:
                items.append(f"- {line.strip()}" if name != "Returns" else line.strip())
        out += items + [""]
    return "\n".join(out)


class KerasStyleSections(griffe.Extension):
    """Rewrites every docstring's `# Section` blocks into Markdown lists."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _convert(obj.docstring.value)
