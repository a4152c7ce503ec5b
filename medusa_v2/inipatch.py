"""Change config.ini's text line by line, so every other byte stays as it was.

configobj's own writer re-indents comments, moves inline comments and rewrites
`key=value` lines; a file a person edits deserves better. `patched` replaces only
the lines of the keys it changes (keeping indentation, `=` spacing and inline
comment), adds a missing key at the end of its section and a missing section at
the end of the file. No I/O here: config.py reads, locks, checks and writes.
"""

from __future__ import annotations

import re

from configobj import ConfigObj

__all__ = ["KEY_LINE", "Value", "patched"]

Value = str | list[str] | tuple[str, ...]

_NEW_FILE_HEADER = (
    "# medusa_v2 configuration, created by medusa_v2. It holds secrets: keep it private.\n"
    "# Every key, its default and its meaning: conf/config.ini.sample in the medusa_v2 sources.\n"
)
_BOM = b"\xef\xbb\xbf"
_SECTION_LINE = re.compile(r"^\s*(\[+)\s*(.*?)\s*\]+\s*(?:#.*)?$")
# configobj's own pattern for a `key = value` line.
KEY_LINE = re.compile(r"""^(\s*)((?:".*?")|(?:'.*?')|(?:[^'"=].*?))\s*=\s*(.*)$""")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_. -]*")


def patched(old: bytes | None, changes: dict[str, dict[str, Value]]) -> bytes:
    """Return the file's bytes with `changes` applied line by line."""
    data = old if old is not None else _NEW_FILE_HEADER.encode()
    bom = _BOM if data.startswith(_BOM) else b""
    lines = data[len(bom) :].decode("utf-8").splitlines(keepends=True)
    newline = next((line[len(line.rstrip("\r\n")) :] for line in lines if line.endswith(("\n", "\r"))), "\n")
    if lines and not lines[-1].endswith(("\n", "\r")):
        lines[-1] += newline
    for section, values in changes.items():
        for key, value in values.items():
            _set_line(lines, _checked_name(section), _checked_name(key), _quoted(value), newline)
    return bom + "".join(lines).encode("utf-8")


def _checked_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name != name.strip():
        raise ValueError(f"{name!r} cannot be written as a config.ini section or key name")
    return name


def _quoted(value: str | list[str] | tuple[str, ...]) -> str:
    """Return `value` as configobj reads it back: bare when possible, else quoted.

    A list or tuple becomes a comma list (`a, b`; `a,` for one item; `,` for none).
    """
    if isinstance(value, (list, tuple)):
        if not value:
            return ","
        return ", ".join(_quoted(item) for item in value) + ("," if len(value) == 1 else "")
    if not isinstance(value, str) or "\n" in value or "\r" in value:
        raise ValueError("config.ini values must be single-line strings")
    if value and value == value.strip() and not any(c in value for c in "\"',#"):
        return value
    if '"' not in value:
        return f'"{value}"'
    if "'" not in value:
        return f"'{value}'"
    for quote in ('"""', "'''"):
        if quote not in value and not value.endswith(quote[0]):
            return f"{quote}{value}{quote}"
    raise ValueError("the value mixes quote characters that config.ini cannot hold")


def _set_line(lines: list[str], section: str, key: str, value: str, newline: str) -> None:
    """Replace the line of [section] key, or add it, in `lines` (edited in place)."""
    spans, section_ends = _locate(lines)
    if (section, key) in spans:
        first, last = spans[section, key]
        lines[first : last + 1] = [_replaced(lines[first], value, newline)]
    elif section in section_ends:
        lines.insert(section_ends[section], f"{key} = {value}{newline}")
    else:
        if lines and lines[-1].strip():
            lines.append(newline)
        lines += [f"[{section}]{newline}", f"{key} = {value}{newline}"]


def _replaced(line: str, value: str, newline: str) -> str:
    """Return `line` with its value replaced, keeping indentation, `=` spacing and comment."""
    body = line.rstrip("\r\n")
    ending = line[len(body) :] or newline
    match = KEY_LINE.match(body)
    assert match is not None  # _locate() only hands over lines this pattern matched
    head, old_value = body[: match.start(3)], match.group(3)
    comment = ""
    if not old_value.startswith(('"""', "'''")):
        parsed = ConfigObj([f"k = {old_value}"], interpolation=False)
        comment = parsed.inline_comments.get("k") or ""
    spacing = ""
    if comment:
        before_comment = old_value[: len(old_value) - len(comment)]
        spacing = before_comment[len(before_comment.rstrip()) :]
    if head.endswith("=") and head[:-1].endswith((" ", "\t")):
        head += " "  # "key =" had no value: give the new one the usual "key = value" spacing
    return f"{head}{value}{spacing}{comment}{ending}"


def _locate(lines: list[str]) -> tuple[dict[tuple[str, str], tuple[int, int]], dict[str, int]]:
    """Map each (section, key) of a top-level section to its first and last line.

    Also map each top-level section to the index just past its last key, where a new
    key of that section belongs (keys after a [[sub-section]] belong to the sub-section).
    """
    spans: dict[tuple[str, str], tuple[int, int]] = {}
    ends: dict[str, int] = {}
    section: str | None = None
    index = 0
    while index < len(lines):
        line = lines[index]
        last = index
        stripped = line.strip()
        marker = _SECTION_LINE.match(line) if stripped.startswith("[") else None
        keyword = None if marker or stripped.startswith("#") else KEY_LINE.match(line.rstrip("\r\n"))
        if marker:
            section = _unquote(marker.group(2)) if len(marker.group(1)) == 1 else None
            if section is not None:
                ends[section] = index + 1
        elif keyword:
            last = _value_end(lines, index, keyword.group(3))
            if section is not None:
                spans[section, _unquote(keyword.group(2).strip())] = (index, last)
                ends[section] = last + 1
        index = last + 1
    return spans, ends


def _value_end(lines: list[str], index: int, value: str) -> int:
    """Return the index of the last line of a value that may be triple-quoted."""
    quote = value[:3]
    if quote not in ('"""', "'''") or quote in value[3:]:
        return index
    for end in range(index + 1, len(lines)):
        if quote in lines[end]:
            return end
    return len(lines) - 1


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text
