"""Real voices with transcripts: the acted dialogue of Fish Fillets NG, from Debian.

Debian's ``fillets-ng-data-cs`` and ``fillets-ng-data-nl`` hold the spoken lines of the
game in Czech and Dutch (Ogg Vorbis, 22.05 kHz, one line per file:
``sound/<level>/<lang>/<line>.ogg``); ``fillets-ng-data`` holds each level's script with
the text of every line (``script/<level>/dialogs_<lang>.lua``: ``dialogId("<line>",
"<font>", "<English>")`` then ``dialogStr("<text in the language>")``). The two fish
that speak most, one actor each per language, become two voices per language:
``fillets-cs:small``, ``fillets-cs:big``, ``fillets-nl:small``, ``fillets-nl:big`` (the
font names the character: ``font_small`` / ``font_big``). Each clip has its script line
as text, so conversations made of them get an STM (WER and cpWER).

`fetch_fillets(lang)` gets them on first use: ``apt-get download`` of the pinned
package versions (no root needed) into a temporary folder, ``dpkg-deb -x``, and only the
lines' audio, the scripts of the language and the packages' copyright files are kept in
``data/fillets/fillets-ng-<lang>-<version>/`` with a ``manifest.json`` (packages,
versions, sha256 of the .deb files, licence, every line: speaker, file, text, duration).
The game's data, voices included, is GNU GPL v2.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Union

from workbench.engine.provenance import file_sha256
from workbench.research.datasets.fetching import dataset_lock, install_staged
from workbench.research.datasets.voices import RealClip, RealVoice

__all__ = ["FILLETS_LANGUAGES", "FILLETS_VERSION", "fetch_fillets", "fillets_dir",
           "fillets_voices", "read_dialogs"]

PathLike = Union[str, "os.PathLike[str]"]

FILLETS_VERSION = "1.0.1-1.1"
"""The Debian version of the packages fetched (bookworm)."""
FILLETS_LANGUAGES = ("cs", "nl")
CHARACTERS = {"font_small": "small", "font_big": "big"}
"""Script font -> voice: the two fish (one actor each per language)."""
FILLETS_LICENCE = ("GNU GPL v2: Fish Fillets NG data (ALTAR interactive, Ivo and Pavel "
                   "Danihelka and the Fish Fillets NG authors), Debian packages fillets-ng-data "
                   "and fillets-ng-data-<lang> (see copyright-<package>)")
_MANIFEST = "manifest.json"
_DEFAULT_DATA_DIR = Path("data")
_GAME = "usr/share/games/fillets-ng"

_STRING = r'"((?:[^"\\]|\\.)*)"'
_LINE = re.compile(r"dialogId\(\s*" + _STRING + r"\s*,\s*" + _STRING + r"\s*,\s*" + _STRING
                   + r"\s*\)\s*dialogStr\(\s*" + _STRING + r"\s*\)")


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": " ", "t": " "}.get(m.group(1), m.group(1)), text)


def read_dialogs(path: PathLike) -> list[tuple[str, str, str]]:
    """``(line id, font, text)`` of each translated line of a ``dialogs_<lang>.lua``
    (lines without a ``dialogStr`` are left out)."""
    text = Path(path).read_text(encoding="utf-8")
    return [(_unescape(i), _unescape(font), " ".join(_unescape(said).split()))
            for i, font, _english, said in _LINE.findall(text)]


def fillets_dir(lang: str, data_dir: PathLike = _DEFAULT_DATA_DIR) -> Path:
    """Where `fetch_fillets` puts one language: ``data_dir/fillets/fillets-ng-<lang>-<version>``."""
    return Path(data_dir) / "fillets" / f"fillets-ng-{lang}-{FILLETS_VERSION}"


def _apt_download(package: str, into: Path) -> Path:
    command = ["apt-get", "download", f"{package}={FILLETS_VERSION}"]
    try:
        proc = subprocess.run(command, cwd=into, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"could not download {package} ({' '.join(command)}): {exc}") from exc
    debs = sorted(into.glob(f"{package}_*.deb"))
    if proc.returncode != 0 or not debs:
        raise RuntimeError(f"could not download {package} ({' '.join(command)}): "
                           f"{(proc.stderr or proc.stdout).strip()[-500:]}")
    return debs[0]


def _extract(deb: Path, into: Path) -> None:
    into.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["dpkg-deb", "-x", str(deb), str(into)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"dpkg-deb -x {deb.name} failed: {proc.stderr.strip()[-500:]}")


def _is_complete(root: Path) -> bool:
    """Every line's audio is there (at the size the manifest names, when it records
    sizes: a truncated copy is no finished fetch)."""
    try:
        document = json.loads((root / _MANIFEST).read_text(encoding="utf-8"))
        lines, sizes = document["lines"], document.get("sizes") or {}
        return all((root / f"{line['audio']}.ogg").is_file() for line in lines) and all(
            (root / name).stat().st_size == size for name, size in sizes.items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def fetch_fillets(lang: str, data_dir: PathLike = _DEFAULT_DATA_DIR) -> Path:
    """The folder of one language's lines (``cs`` or ``nl``), fetched on first use (see
    the module); returns `fillets_dir(lang, data_dir)`."""
    if lang not in FILLETS_LANGUAGES:
        raise ValueError(f"lang must be one of {', '.join(FILLETS_LANGUAGES)}, not {lang!r}")
    root = fillets_dir(lang, data_dir)
    if _is_complete(root):
        return root
    with dataset_lock(root):  # processes that fetch at once take turns
        if not _is_complete(root):  # (another one may have fetched it meanwhile)
            _fetch(lang, root)
    return root


def _fetch(lang: str, root: Path) -> None:
    import soundfile

    packages = ("fillets-ng-data", f"fillets-ng-data-{lang}")
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=root.parent) as tmp:
        work = Path(tmp)
        (work / "debs").mkdir()
        debs = {p: _apt_download(p, work / "debs") for p in packages}
        for package, deb in debs.items():
            _extract(deb, work / "x")
        game = work / "x" / _GAME
        staged = work / "staged"
        staged.mkdir()
        lines: list[dict[str, Any]] = []
        for script in sorted(game.glob(f"script/*/dialogs_{lang}.lua")):
            level = script.parent.name
            kept = False
            for line_id, font, text in read_dialogs(script):
                audio = game / "sound" / level / lang / f"{line_id}.ogg"
                if font not in CHARACTERS or not text or not audio.is_file():
                    continue
                relative = f"sound/{level}/{lang}/{line_id}"
                (staged / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(audio, staged / f"{relative}.ogg")
                lines.append({"speaker": CHARACTERS[font], "level": level, "line": line_id,
                              "audio": relative, "text": text,
                              "duration": round(soundfile.info(str(audio)).duration, 3)})
                kept = True
            if kept:
                (staged / "script" / level).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(script, staged / "script" / level / script.name)
        if not lines:
            raise RuntimeError(f"no {lang} lines found in {', '.join(packages)}")
        for package in packages:
            shutil.copyfile(work / "x" / "usr/share/doc" / package / "copyright",
                            staged / f"copyright-{package}")
        manifest = {
            "dataset": f"Fish Fillets NG acted dialogue, {lang}",
            "source": {"packages": {p: {"version": FILLETS_VERSION, "file": d.name,
                                        "sha256": file_sha256(d)} for p, d in debs.items()},
                       "fetched_with": "apt-get download " + " ".join(
                           f"{p}={FILLETS_VERSION}" for p in packages) + "; dpkg-deb -x"},
            "licences": {"audio and scripts": FILLETS_LICENCE},
            "voices": {f"fillets-{lang}:{name}": f"the {name} fish ({font} lines)"
                       for font, name in CHARACTERS.items()},
            "lines": lines,
            "sizes": {p.relative_to(staged).as_posix(): p.stat().st_size
                      for p in sorted(staged.rglob("*")) if p.is_file()},
        }
        (staged / _MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False)
                                        + "\n", encoding="utf-8")
        install_staged(staged, root, work / "incomplete")


def fillets_voices(lang: str, data_dir: PathLike = _DEFAULT_DATA_DIR) -> list[RealVoice]:
    """The two fish of one language as `RealVoice`\\ s (``fillets-<lang>:small`` and
    ``fillets-<lang>:big``), each clip a whole line with its script text."""
    root = fetch_fillets(lang, data_dir)
    lines = json.loads((root / _MANIFEST).read_text(encoding="utf-8"))["lines"]
    voices = []
    for name in CHARACTERS.values():
        clips = tuple(RealClip(line["audio"], 0.0, line["duration"], line["text"])
                      for line in lines if line["speaker"] == name)
        voices.append(RealVoice(
            name=f"fillets-{lang}:{name}", engine="fillets", model=name, clips=clips,
            audio_dir=root, description=f"Fish Fillets NG, the {name} fish ({lang})",
            source=f"Debian fillets-ng-data and fillets-ng-data-{lang} {FILLETS_VERSION}",
            licence=FILLETS_LICENCE, audio_ext=".ogg"))
    return voices
