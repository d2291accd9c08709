"""README.md's reference tables against the code they describe, so the two cannot drift.

* The protocol's error table: every code of ``ErrorCode`` is listed, and every text is one
  the server actually sends (read from the ``ProtocolError``/``error(...)`` call sites in
  ``server/``; limit texts rendered with the default limits).
* The server's flags table: every option of ``python -m server`` is listed, with its
  environment variable (which must really set that option) and its default.
"""

from __future__ import annotations

import argparse
import ast
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional
from unittest import mock

import pytest

from server import config as server_config
from server.limits import Limits
from server.protocol import ErrorCode, Messages

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
REMARK = " — "  # in README's message column: the text, then what happens


def markdown_table(text: str, header_prefix: str) -> list[list[str]]:
    """The body rows of the first table whose header line starts with ``header_prefix``."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(header_prefix)), None)
    assert start is not None, f"no table starting with {header_prefix!r} in README.md"
    rows = []
    for line in lines[start + 2:]:  # skip the header and the |---| line
        if not line.startswith("|"):
            break
        cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
        rows.append([c.strip().replace("\\|", "|") for c in cells])
    return rows


# ----------------------------------------------------------------------- error table

def _template(node: ast.expr) -> Optional[str]:
    """The text an error-message expression produces; varying parts become ``{}``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id == "Messages"):
        value = getattr(Messages, node.attr)
        return value if isinstance(value, str) else None
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name) and node.func.value.id == "Messages"):
        def arg(a: ast.expr) -> Any:
            src = ast.unparse(a)
            return Limits() if src == "limits" or src.endswith(".limits") else "{}"
        return getattr(Messages, node.func.attr)(*[arg(a) for a in node.args])
    return None


def server_error_texts() -> dict[int, set[str]]:
    """Per error code, the texts ``server/`` sends with it (templates, default limits)."""
    texts: dict[int, set[str]] = defaultdict(set)
    for path in sorted((ROOT / "server").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            first = node.args[0] if node.args else None
            if (isinstance(first, ast.Attribute) and isinstance(first.value, ast.Name)
                    and first.value.id == "ErrorCode" and len(node.args) >= 2):
                code, message = ErrorCode[first.attr], node.args[1]
            elif isinstance(node.func, ast.Name) and node.func.id == "_field_error" and first:
                code, message = ErrorCode.INVALID_FIELD, first
            else:
                continue
            text = _template(message)
            if text is not None:  # e.g. `_field_error`'s own body passes a variable on
                texts[int(code)].add(text)
    return texts


def _readme_errors() -> list[tuple[int, str]]:
    rows = markdown_table(README.read_text(), "| code | message")
    out = []
    for cells in rows:
        text = cells[1].partition(REMARK)[0].strip()
        out.append((int(cells[0]), re.sub(r"\{[^{}]*\}", "{}", text)))
    return out


def test_the_code_reader_finds_the_seed_texts() -> None:
    texts = server_error_texts()
    assert texts[4000] == {"Unknown action"}
    assert texts[4003] == {"Chunk size exceeds limit (1MB)"}
    assert texts[5000] == {"Erro interno: {}"}
    assert set(texts) == {int(c) for c in ErrorCode}, "a code the server never sends"


def test_error_table_lists_every_code_and_no_other() -> None:
    listed = {code for code, _ in _readme_errors()}
    assert listed == {int(c) for c in ErrorCode}


def test_error_table_texts_are_the_ones_the_server_sends() -> None:
    sent = server_error_texts()
    wrong = [(code, text, sorted(sent[code])) for code, text in _readme_errors()
             if text not in sent[code]]
    assert not wrong, "README texts the server never sends (code, README, server): " + repr(wrong)


# ----------------------------------------------------------------------- flags table

class _Parsed(Exception):
    pass


def server_parser(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> argparse.ArgumentParser:
    """The parser `python -m server` builds, with exactly ``env`` as WORKBENCH_* variables."""
    import os

    for name in [n for n in os.environ if n.startswith("WORKBENCH_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    captured: dict[str, argparse.ArgumentParser] = {}

    def grab(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        captured["parser"] = self
        raise _Parsed

    with mock.patch.object(argparse.ArgumentParser, "parse_args", grab):
        with pytest.raises(_Parsed):
            server_config.parse_args([])
    for name in env:
        monkeypatch.delenv(name)
    return captured["parser"]


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in parser._actions for s in a.option_strings
            if s.startswith("--") and s != "--help"}


def _readme_flags() -> dict[str, tuple[str, str]]:
    rows = markdown_table(README.read_text(), "| flag | environment | default |")
    return {cells[0].strip("`"): (cells[1].strip("`"), cells[2]) for cells in rows}


def _shown(default: Any) -> set[str]:
    """How README writes a default: a set of the items it names."""
    if default is None:
        return {"none"}
    if isinstance(default, bool):
        return {"on" if default else "off"}
    if isinstance(default, tuple):
        return set(default) if default else {"automatic"}
    if isinstance(default, float):
        return {f"{default:g}"}
    return {str(default)}


def _readme_default(cell: str) -> set[str]:
    items = set()
    for item in cell.replace("`", "").split(", "):
        if item.startswith("http(s)://"):
            items |= {"http://" + item[10:], "https://" + item[10:]}
        else:
            items.add(item)
    return items


def test_flags_table_lists_every_server_option(monkeypatch: pytest.MonkeyPatch) -> None:
    assert set(_readme_flags()) == set(_options(server_parser(monkeypatch, {})))


def test_flags_table_defaults_are_the_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    options = _options(server_parser(monkeypatch, {}))
    wrong = [(flag, cell, options[flag].default) for flag, (_, cell) in _readme_flags().items()
             if flag in options and _readme_default(cell) != _shown(options[flag].default)]
    assert not wrong, "README defaults that differ (flag, README, code): " + repr(wrong)


def test_flags_table_environment_variables_set_their_option(
        monkeypatch: pytest.MonkeyPatch) -> None:
    plain = _options(server_parser(monkeypatch, {}))
    for flag, (env_cell, _) in _readme_flags().items():
        action = plain[flag]
        switch = isinstance(action, argparse._StoreTrueAction)
        assert env_cell.endswith("=1") == switch, f"{flag}: README's {env_cell!r}"
        name = env_cell.removesuffix("=1")
        assert re.fullmatch(r"WORKBENCH_[A-Z_]+", name), f"{flag}: {env_cell!r}"
        if switch:
            value = "1"
        elif action.choices:
            value = next(c for c in action.choices if c != action.default)
        else:
            value = "7"
        changed = _options(server_parser(monkeypatch, {name: value}))[flag].default
        assert changed != action.default, f"{name}={value} does not change {flag}"


# ----------------------------------------------------------------------- recorder page

STATIC = ROOT / "server" / "static"


def _readme_section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def test_recorder_page_section_names_every_live_event_the_page_draws() -> None:
    source = (STATIC / "live.js").read_text()
    match = re.search(r"LIVE_EVENTS = new Set\(\[(.*?)\]\)", source, re.S)
    assert match, "live.js: LIVE_EVENTS not found"
    events = re.findall(r"'([a-z_]+)'", match.group(1))
    assert {"transcript_partial", "transcript_final", "speaker_labels", "diarization_update",
            "live_paused", "live_resumed"} <= set(events)
    section = _readme_section("Recorder page")
    missing = [e for e in events if f"`{e}`" not in section]
    assert not missing, f"README's recorder page section does not mention {missing}"


def test_recorder_page_section_names_the_live_checkbox_and_what_it_sends() -> None:
    html = (STATIC / "index.html").read_text()
    match = re.search(r'<input type="checkbox" id="live-results"[^>]*>\s*([^<]+?)\s*</label>', html)
    assert match, "index.html: the live-results checkbox not found"
    label = " ".join(match.group(1).split())
    section = _readme_section("Recorder page")
    assert f'"{label}"' in section
    assert "checked" in match.group(0) and "(the default" in section
    assert "start.live_results = true" in (STATIC / "app.js").read_text()
    assert '`"live_results": true`' in section


def test_recorder_page_section_names_every_static_module() -> None:
    section = _readme_section("Recorder page")
    modules = sorted(p.name for p in STATIC.glob("*.js"))
    missing = [m for m in modules if f"`{m}`" not in section]
    assert not missing, f"README's recorder page section does not name {missing}"


def test_page_modules_stay_small() -> None:
    """The layout rule (no module over 600 lines) for the page's scripts too."""
    long = {p.name: n for p in STATIC.glob("*.js")
            if (n := len(p.read_text().splitlines())) > 600}
    assert not long, long
