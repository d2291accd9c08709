"""Run configurations (workbench.engine.config) and every place one enters: the library, the
command line, the WebSocket ``start``, ``POST /api/sessions`` and ``POST .../runs`` (on a
real server process, which must never import torch to check one)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from server.jobs import check_run_config, split_run_config
from server.protocol import RUN_OPTION_FIELDS, ErrorCode, ProtocolError, given_options, \
    parse_start
from server.worker import execute
from workbench.__main__ import build_parser, transcribe_config
from workbench.engine.audio import write_wav
from workbench.engine.config import (
    FLAT_OPTIONS,
    WHISPER_LANGUAGES,
    check_language,
    ASRConfig,
    ConfigError,
    DiarizationConfig,
    MergeConfig,
    RunConfig,
    flat_option_type,
    names_local_folder,
)
from workbench.notebook.local_server import REPO_ROOT, LocalServer

TIMEOUT = 30
PCM_SECOND = b"\x01\x00" * 16000
START_PCM = {"action": "start", "format": "wav", "input_format": "pcm_s16le"}


# ---------------------------------------------------------------------- the library


def test_defaults_round_trip_and_key() -> None:
    config = RunConfig()
    assert RunConfig.from_dict(config.to_dict()) == config
    assert RunConfig.from_dict(None) == RunConfig.from_dict({}) == config
    assert config.to_dict() == config.serialize()
    assert set(config.to_dict()) == {"asr", "diarization", "merge", "transcribe", "diarize"}
    assert config.to_dict()["asr"]["word_timestamps"] is True
    assert len(config.key()) == 16 and config.key() == RunConfig().key()
    assert RunConfig.from_dict({"num_speakers": 2}).key() != config.key()


def test_speaker_count_options_are_echoed_and_round_trip() -> None:
    # the options of issue #14 (AMI): echoed into every run's stored configuration
    diarization = RunConfig().to_dict()["diarization"]
    assert diarization["powerset_count"] is True
    assert diarization["overlap_bias"] == 0.3
    assert diarization["clustering_threshold"] == 0.3
    assert diarization["given_count_min_active"] == 0.05
    changed = RunConfig.from_dict({"diarization": {"powerset_count": False, "overlap_bias": 0,
                                                   "given_count_min_active": None}})
    assert changed.diarization.overlap_bias == 0.0
    assert isinstance(changed.diarization.overlap_bias, float)
    assert changed.diarization.given_count_min_active is None
    assert RunConfig.from_dict(changed.to_dict()) == changed
    assert changed.key() != RunConfig().key()


def test_flat_and_nested_options_are_the_same_configuration() -> None:
    flat = RunConfig.from_dict({"asr_model": "base", "language": "en", "vad_filter": False,
                                "beam_size": 3, "compute_type": "float32", "num_speakers": 2,
                                "clustering_threshold": 0.4, "min_duration_off": 0.1,
                                "pipeline_path": "/models/p"})
    nested = RunConfig.from_dict({
        "asr": {"model": "base", "language": "en", "vad_filter": False, "beam_size": 3,
                "compute_type": "float32"},
        "diarization": {"num_speakers": 2, "clustering_threshold": 0.4,
                        "min_duration_off": 0.1, "pipeline_path": "/models/p"}})
    assert flat == nested and flat.asr.vad_filter is False
    # Every flat name lands on a real field of its section.
    for name, (section, attr) in FLAT_OPTIONS.items():
        assert hasattr(getattr(RunConfig(), section), attr), name


def test_integer_for_a_number_and_null_for_optional() -> None:
    config = RunConfig.from_dict({"clustering_threshold": 1, "num_speakers": None,
                                  "diarization": {"split_threshold": None}})
    assert config.diarization.clustering_threshold == 1.0
    assert isinstance(config.diarization.clustering_threshold, float)
    assert config.diarization.num_speakers is None and config.diarization.split_threshold is None


def test_numpy_numbers_are_numbers() -> None:
    config = RunConfig.from_dict({"num_speakers": np.int64(3),
                                  "clustering_threshold": np.float32(0.5)})
    assert config.diarization.num_speakers == 3 and type(config.diarization.num_speakers) is int
    assert type(config.diarization.clustering_threshold) is float
    with pytest.raises(ConfigError, match="'num_speakers' must be an integer"):
        RunConfig.from_dict({"num_speakers": np.float64(2.0)})


BAD = [
    # wrong types
    ({"num_speakers": "two"}, "'num_speakers' must be an integer"),
    ({"num_speakers": 2.5}, "'num_speakers' must be an integer"),
    ({"num_speakers": True}, "'num_speakers' must be an integer"),
    ({"vad_filter": "yes"}, "'vad_filter' must be true or false"),
    ({"vad_filter": 1}, "'vad_filter' must be true or false"),
    ({"language": ["en"]}, "'language' must be a string"),
    ({"asr_model": None}, "'asr_model' must be a string, not null"),
    ({"clustering_threshold": "0.3"}, "'clustering_threshold' must be a number"),
    ({"clustering_threshold": math.nan}, "'clustering_threshold' must be a finite number"),
    ({"clustering_threshold": math.inf}, "'clustering_threshold' must be a finite number"),
    ({"clustering_threshold": 10 ** 400}, "'clustering_threshold' must be a finite number"),
    ({"num_speakers": 10 ** 400}, "'num_speakers' must be >= 1 and <= 64"),
    ({"diarization": {"num_speakers": "2"}}, "'diarization.num_speakers' must be an integer"),
    ({"merge": {"tolerance": "x"}}, "'merge.tolerance' must be a number"),
    ({"transcribe": "no"}, "'transcribe' must be true or false"),
    ({"asr": 3}, "'asr' must be a JSON object"),
    # out of range
    ({"num_speakers": 0}, "'num_speakers' must be >= 1 and <= 64 (got 0)"),
    ({"max_speakers": 65}, "'max_speakers' must be >= 1 and <= 64"),
    ({"clustering_threshold": 0}, "'clustering_threshold' must be > 0 and <= 2"),
    ({"clustering_threshold": 2.5}, "'clustering_threshold' must be > 0 and <= 2"),
    ({"beam_size": 0}, "'beam_size' must be >= 1"),
    ({"min_duration_off": -1}, "'min_duration_off' must be >= 0"),
    ({"merge": {"max_pause": 0}}, "'merge.max_pause' must be > 0"),
    ({"compute_type": "int4"}, "'compute_type' must be one of"),
    ({"diarization": {"clustering_method": "kmeans"}}, "'diarization.clustering_method' must be one of"),
    ({"diarization": {"embedding_passes": "twice"}},
     "'diarization.embedding_passes' must be one of"),
    ({"diarization": {"embedding_block": 0.1}}, "'diarization.embedding_block' must be >= 0.5"),
    ({"diarization": {"embedding_share": 0}}, "'diarization.embedding_share' must be >= 1"),
    ({"diarization": {"embedding_share": 1.5}}, "'diarization.embedding_share' must be an integer"),
    ({"diarization": {"embedding_context": -1}}, "'diarization.embedding_context' must be >= 0"),
    ({"diarization": {"overlap_bias": 1.5}}, "'diarization.overlap_bias' must be >= 0 and <= 1"),
    ({"diarization": {"overlap_bias": -0.1}}, "'diarization.overlap_bias' must be >= 0 and <= 1"),
    ({"diarization": {"powerset_count": "yes"}},
     "'diarization.powerset_count' must be true or false"),
    ({"diarization": {"given_count_min_active": 2}},
     "'diarization.given_count_min_active' must be >= 0 and <= 1"),
    # an onset of 1 keeps no frame (no probability exceeds it): empty output, no error
    ({"diarization": {"segmentation_onset": 1.0}},
     "'diarization.segmentation_onset' must be > 0 and < 1 (got 1.0)"),
    # any text reached torch.device mid-run (after the ASR), with torch's message
    ({"diarization": {"device": "gpu"}},
     "'diarization.device' must be one of cpu, cuda, mps, cuda:0, "),
    ({"diarization": {"device": "meta"}}, "'diarization.device' must be one of"),
    ({"asr_model": " "}, "'asr_model' must not be empty"),
    ({"language": "x" * 10000}, "'language' is too long"),
    # a language Whisper does not know, or one an English-only model cannot do (the run
    # failed at the model's load, after the whole recording)
    ({"language": "zz"}, "'language' must be a Whisper language code"),
    ({"language": "EN"}, "'language' must be a Whisper language code"),
    # unknown names
    ({"bogus": 1}, "unknown option(s): bogus"),
    ({"asr": {"temperature": 0.2}}, "unknown ASR option(s): temperature"),
    ({"diarization": {"threshold": 0.5}}, "unknown diarization option(s): threshold"),
    ({"pipeline": "full"}, "'pipeline' is the server's switch"),
    # options that do not go together
    ({"min_speakers": 5, "max_speakers": 2}, "'min_speakers' must not exceed 'max_speakers'"),
    ({"num_speakers": 5, "max_speakers": 2}, "'num_speakers' must not exceed 'max_speakers'"),
    ({"num_speakers": 1, "min_speakers": 2}, "'num_speakers' must not be below 'min_speakers'"),
    ({"diarization": {"segmentation_step": 1e-300}},
     "'diarization.segmentation_step' must be >= 0.01 and <= 1"),
    ({"transcribe": False, "diarize": False}, "a run must transcribe, diarize or both"),
    ({"num_speakers": 2, "diarization": {"num_speakers": 3}}, "disagree"),
    ({"asr": {"word_timestamps": False}}, "'word_timestamps' cannot be turned off"),
]


@pytest.mark.parametrize(("data", "message"), BAD, ids=[str(d)[:50] for d, _ in BAD])
def test_bad_configurations_name_the_field(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        RunConfig.from_dict(data)
    assert message in str(exc.value)
    assert isinstance(exc.value, ValueError)  # callers that caught ValueError still do


def test_a_configuration_must_be_an_object() -> None:
    with pytest.raises(ConfigError, match="must be a JSON object"):
        RunConfig.from_dict([1, 2])  # type: ignore[arg-type]


def test_sections_check_themselves_when_built_directly() -> None:
    with pytest.raises(ConfigError, match="'beam_size' must be >= 1"):
        ASRConfig(beam_size=0)
    with pytest.raises(ConfigError, match="'device' must be one of"):
        ASRConfig(device="tpu")
    with pytest.raises(ConfigError, match="'min_speakers' must not exceed"):
        DiarizationConfig(min_speakers=3, max_speakers=2)
    with pytest.raises(ConfigError, match="'tolerance' must be >= 0"):
        MergeConfig(tolerance=-1)
    assert DiarizationConfig.from_dict(DiarizationConfig(num_speakers=2).to_dict()) == \
        DiarizationConfig(num_speakers=2)
    assert DiarizationConfig(device="cuda:1").device == "cuda:1"  # a GPU by its index


def test_an_english_only_model_takes_english_only() -> None:
    """Checked on a run's whole configuration: options alone name no model until merged
    with the server's defaults and the session's (a session of `base` refused 'de')."""
    check_language(RunConfig.from_dict({"asr_model": "base", "language": "de"}))
    check_language(RunConfig.from_dict({"language": "de", "transcribe": True,
                                        "asr": {"model": "small"}}))
    for options, model in (({"language": "fr"}, "tiny.en"),
                           ({"asr_model": "base.en", "language": "de"}, "base.en")):
        with pytest.raises(ConfigError, match=f"model '{model}' is English-only: 'language' "
                                              "must be 'en' or null"):
            check_language(RunConfig.from_dict(options))


def test_the_whisper_languages_are_faster_whispers() -> None:
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    assert tuple(WHISPER_LANGUAGES) == tuple(_LANGUAGE_CODES)
    assert RunConfig.from_dict({"asr_model": "base", "language": "yue"}).asr.language == "yue"


def test_config_module_imports_no_model_library() -> None:
    code = ("import sys, workbench.engine.config, server.jobs, server.protocol, server.app; "
            "print(sorted(m for m in ('torch', 'pyannote', 'faster_whisper', 'ctranslate2') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------- the server's checks


def test_protocol_start_fields_come_from_the_config() -> None:
    assert RUN_OPTION_FIELDS == tuple(FLAT_OPTIONS)
    req = parse_start({**START_PCM, "num_speakers": 2, "beam_size": 3, "vad_filter": False,
                       "language": None, "colour": "blue"})
    # a null is kept (on a resume it clears the session's option), and is no option given
    assert req.options == {"num_speakers": 2, "beam_size": 3, "vad_filter": False,
                           "language": None}
    assert given_options(req.options) == {"num_speakers": 2, "beam_size": 3, "vad_filter": False}
    assert req.ignored == ("colour",)
    for bad, name in (({"num_speakers": 0}, "num_speakers"), ({"vad_filter": "no"}, "vad_filter"),
                      ({"min_speakers": 4, "max_speakers": 2}, "min_speakers"),
                      ({"compute_type": "int4"}, "compute_type")):
        with pytest.raises(ProtocolError) as exc:
            parse_start({**START_PCM, **bad})
        assert exc.value.code == ErrorCode.INVALID_FIELD and f"'{name}'" in exc.value.message


def test_the_pipeline_switch_stays_apart_from_pipeline_options() -> None:
    assert split_run_config({"pipeline": "renditions", "num_speakers": 2}) == \
        ("renditions", {"num_speakers": 2})
    assert check_run_config({"pipeline": "full", "num_speakers": 2}) == \
        {"pipeline": "full", "num_speakers": 2}
    with pytest.raises(ConfigError, match="'pipeline' must be one of full, renditions"):
        check_run_config({"pipeline": "fast"})
    with pytest.raises(ConfigError, match="'pipeline' is the server's switch"):
        check_run_config({"pipeline": "full"}, switch=False)  # not a `start` field
    with pytest.raises(ConfigError, match="must be a JSON object"):
        check_run_config(["pipeline"])


def test_worker_fails_a_stored_bad_configuration_clearly(tmp_path: Path) -> None:
    """A run stored before validation existed fails with the field named, before any work."""
    write_wav(tmp_path / "audio.wav", np.zeros(1600, dtype=np.float32))
    task = {"run_id": "r1", "session_dir": str(tmp_path), "run_dir": str(tmp_path / "run"),
            "data_dir": str(tmp_path), "format": "wav", "pipeline": "full",
            "config": {"num_speakers": 0}}
    events: list[Any] = []
    assert execute(task, events.append) == \
        ("failed", "r1", "Invalid run configuration: 'num_speakers' must be >= 1 and <= 64 (got 0)")
    assert events == []  # not even the renditions stage started


# ---------------------------------------------------------------------- the command line


def test_cli_can_turn_vad_off() -> None:
    base = ["call.wav", "--out", "out"]
    assert transcribe_config(base).asr.vad_filter is True
    assert transcribe_config([*base, "--vad-filter"]).asr.vad_filter is True
    assert transcribe_config([*base, "--no-vad-filter"]).asr.vad_filter is False
    assert transcribe_config([*base, "--no-vad-filter"]).to_dict()["asr"]["vad_filter"] is False
    # A flag wins over the same option in --config.
    assert transcribe_config([*base, "--config", '{"asr": {"vad_filter": true}}',
                              "--no-vad-filter"]).asr.vad_filter is False
    assert transcribe_config([*base, "--config", '{"vad_filter": false}']).asr.vad_filter is False


def test_cli_has_a_flag_for_every_flat_option() -> None:
    help_text = build_parser()._subparsers._group_actions[0].choices["transcribe"].format_help()
    for name in FLAT_OPTIONS:
        flag = "--" + name.replace("_", "-")
        assert flag in help_text, flag
        if flat_option_type(name) is bool:
            assert "--no-" + name.replace("_", "-") in help_text
    config = transcribe_config(["a.wav", "--out", "o", "--num-speakers", "2", "--beam-size", "2",
                                "--min-duration-off", "0.5", "--asr-model", "base",
                                "--no-diarization"])
    assert (config.diarization.num_speakers, config.asr.beam_size, config.asr.model,
            config.diarization.min_duration_off, config.diarize) == (2, 2, "base", 0.5, False)


@pytest.mark.parametrize(("flags", "message"), [
    (["--num-speakers", "0"], "'num_speakers' must be >= 1"),
    (["--min-speakers", "3", "--max-speakers", "2"], "'min_speakers' must not exceed"),
    (["--config", "{nope"], "--config is not JSON"),
    (["--config", '{"bogus": 1}'], "unknown option(s): bogus"),
    (["--compute-type", "int4"], "'compute_type' must be one of"),
])
def test_cli_refuses_bad_configurations_before_loading_models(flags: list[str],
                                                              message: str) -> None:
    code = ("import sys; from workbench.__main__ import main; "
            f"rc = main(['transcribe', 'missing.wav', '--out', 'o', *{flags!r}]); "
            "print(rc, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.split() == ["2", "False"], out.stderr[-1000:]
    assert "error: invalid configuration:" in out.stderr and message in out.stderr


# ---------------------------------------------------------------------- a real server


def mapped_libraries(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


async def recv(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await ws.receive(timeout=TIMEOUT)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    return json.loads(msg.data)


async def recv_until(ws: aiohttp.ClientWebSocketResponse, *kinds: str) -> dict[str, Any]:
    while True:
        m = await recv(ws)
        if m.get("type") in kinds:
            return m


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc")
async def test_server_checks_every_entry_without_importing_torch(start_server) -> None:  # type: ignore[no-untyped-def]
    srv: LocalServer = start_server()
    assert srv.process is not None
    pid = srv.process.pid
    async with aiohttp.ClientSession() as s:
        # POST /api/sessions: options are checked before anything is stored.
        for options, name in (({"num_speakers": 0}, "num_speakers"),
                              ({"vad_filter": "yes"}, "vad_filter"),
                              ({"diarization": {"bogus": 1}}, "bogus"),
                              ({"pipeline": "fast"}, "pipeline"),
                              # a session's options go to `start`, which refuses the switch:
                              # a session created with it could never record
                              ({"pipeline": "renditions"}, "'pipeline' is the server's switch")):
            async with s.post(f"{srv.url}/api/sessions", json={"options": options}) as r:
                body = await r.json()
                assert r.status == 400 and name in body["error"], body
                assert body["error"].startswith("Invalid session options: ")
        async with s.get(f"{srv.url}/api/sessions") as r:
            assert (await r.json())["sessions"] == []
        async with s.post(f"{srv.url}/api/sessions",
                          json={"options": {"min_speakers": 3, "language": "en"}}) as r:
            assert r.status == 201
            precreated = await r.json()

        async with s.ws_connect(f"{srv.ws_url}/ws/new") as ws:
            # WebSocket `start`: a bad field is refused, the connection goes on.
            await ws.send_json({**START_PCM, "clustering_threshold": 7})
            reply = await recv(ws)
            assert reply["code"] == ErrorCode.INVALID_FIELD
            assert "'clustering_threshold' must be > 0 and <= 2" in reply["message"]
            await ws.send_json({**START_PCM, "num_speakers": 2, "beam_size": 2})
            started = await recv(ws)
            assert started["type"] == "recording_started" and "ignored_fields" not in started
            sid = started["session_id"]
            await ws.send_bytes(PCM_SECOND)
            await ws.send_json({"action": "stop"})
            done = await recv_until(ws, "processing_complete", "processing_failed")
            assert done["type"] == "processing_complete", done
        # a language meets the session's model, not the default one (a session of `base`
        # was refused 'de' as English-only)
        async with s.post(f"{srv.url}/api/sessions",
                          json={"options": {"asr_model": "base"}}) as r:
            multilingual = (await r.json())["id"]
        async with s.ws_connect(f"{srv.ws_url}/ws/{multilingual}") as ws:
            await ws.send_json({**START_PCM, "language": "de"})
            assert (await recv(ws))["type"] == "recording_started"
        # `start` options that clash with the session's stored ones are refused too.
        async with s.ws_connect(f"{srv.ws_url}/ws/{precreated['id']}") as ws:
            await ws.send_json({**START_PCM, "max_speakers": 2})
            reply = await recv(ws)
            assert reply["code"] == ErrorCode.INVALID_FIELD
            assert "'min_speakers' must not exceed 'max_speakers'" in reply["message"]
            # a language the model cannot do is refused before anything is recorded
            await ws.send_json({**START_PCM, "language": "fr"})
            reply = await recv(ws)
            assert reply["code"] == ErrorCode.INVALID_FIELD and "English-only" in reply["message"]
            # a null clears the stored option (it was dropped, so this start was refused)
            await ws.send_json({**START_PCM, "min_speakers": None, "max_speakers": 2})
            started = await recv(ws)
            assert started["type"] == "recording_started", started
            await ws.send_bytes(PCM_SECOND)
            await ws.send_json({"action": "stop"})
            await recv_until(ws, "processing_complete", "processing_failed")
        async with s.get(f"{srv.url}/api/sessions/{precreated['id']}") as r:
            assert (await r.json())["options"] == {"language": "en", "max_speakers": 2}

        async with s.get(f"{srv.url}/api/sessions/{sid}") as r:
            assert (await r.json())["options"] == {"num_speakers": 2, "beam_size": 2}
        # POST .../runs: a good run is queued, bad ones get a clear 400.
        async with s.post(f"{srv.url}/api/sessions/{sid}/runs",
                          json={"num_speakers": 2, "asr": {"beam_size": 3},
                                "pipeline": "full"}) as r:
            assert r.status == 202, await r.text()
        for config, message in (({"num_speakers": "two"}, "'num_speakers' must be an integer"),
                                ({"clustering_threshold": 5}, "'clustering_threshold' must be"),
                                ({"clustering_threshold": 10 ** 400}, "must be a finite number"),
                                ({"bogus": 1}, "unknown option(s): bogus"),
                                ({"language": "zz"}, "a Whisper language code"),
                                ({"pipeline": "x"}, "'pipeline' must be one of"),
                                ({"transcribe": False, "diarize": False}, "transcribe, diarize")):
            async with s.post(f"{srv.url}/api/sessions/{sid}/runs", json=config) as r:
                body = await r.json()
                assert r.status == 400, body
                assert body["error"].startswith("Invalid run configuration: ")
                assert message in body["error"]
        async with s.post(f"{srv.url}/api/sessions/{sid}/runs", data=b"[1]") as r:
            assert r.status == 400 and "JSON object" in (await r.json())["error"]
        async with s.get(f"{srv.url}/api/sessions/{sid}/runs") as r:
            runs = (await r.json())["runs"]
        assert len(runs) == 2 and runs[1]["config"] == {"num_speakers": 2,
                                                        "asr": {"beam_size": 3},
                                                        "pipeline": "full"}
        async with s.get(f"{srv.url}/api/health") as r:
            assert r.status == 200
    assert srv.process.poll() is None
    maps = mapped_libraries(pid)
    assert "libtorch" not in maps and "/torch/" not in maps
    assert "libc" in maps  # the check reads the right thing



async def test_clients_may_not_name_model_folders_unless_the_server_allows_it(
        start_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A pyannote pipeline folder or an ASR model path is code the worker would load:
    refused at every entry point by default, accepted with --allow-local-models."""
    folder = tmp_path / "models" / "whisper"
    folder.mkdir(parents=True)
    refused = [({"pipeline_path": str(folder)}, "pipeline_path"),
               ({"diarization": {"pipeline_path": "/etc"}}, "pipeline_path"),
               ({"asr_model": str(folder)}, "asr_model"),
               ({"asr_model": "./models/whisper"}, "asr_model"),
               ({"asr_model": "~/whisper"}, "asr_model"),
               # the loader strips the name, and takes a name that exists here as a folder
               # (the server's working directory is the repository): both went through
               ({"asr_model": " " + str(folder)}, "asr_model"),
               ({"asr_model": "server"}, "asr_model")]
    srv: LocalServer = start_server(data_dir=tmp_path / "closed")
    async with aiohttp.ClientSession() as s:
        for options, name in refused:
            async with s.post(f"{srv.url}/api/sessions", json={"options": options}) as r:
                body = await r.json()
                assert r.status == 400 and f"'{name}' names a folder on the server" in \
                    body["error"] and "--allow-local-models" in body["error"], body
        async with s.ws_connect(f"{srv.ws_url}/ws/new") as ws:
            await ws.send_json({**START_PCM, "asr_model": str(folder)})
            reply = await recv(ws)
            assert reply["code"] == ErrorCode.INVALID_FIELD and "asr_model" in reply["message"]
            assert "session's options" not in reply["message"]  # there is no session
            async with s.get(f"{srv.url}/api/sessions") as r:
                assert (await r.json())["sessions"] == []  # a refused start leaves none behind
            # bundled names and owner/repo hub ids are no paths
            await ws.send_json({**START_PCM, "asr_model": "Systran/faster-whisper-tiny"})
            started = await recv(ws)
            assert started["type"] == "recording_started", started
            sid = started["session_id"]
            await ws.send_bytes(PCM_SECOND)
            await ws.send_json({"action": "stop"})
            await recv_until(ws, "processing_complete", "processing_failed")
        async with s.post(f"{srv.url}/api/sessions/{sid}/runs",
                          json={"pipeline_path": str(folder)}) as r:
            assert r.status == 400 and "pipeline_path" in (await r.json())["error"]
        async with s.post(f"{srv.url}/api/sessions/{sid}/runs",
                          json={"asr_model": "base"}) as r:
            assert r.status == 202
        # a name no file can have is no folder (Path.exists raised "File name too long":
        # a 500 here, "Erro interno" at `start`)
        assert not names_local_folder("a" * 300)
        async with s.post(f"{srv.url}/api/sessions",
                          json={"options": {"asr_model": "a" * 300}}) as r:
            assert r.status == 201, await r.text()
    opened: LocalServer = start_server("--allow-local-models", data_dir=tmp_path / "open")
    async with aiohttp.ClientSession() as s:
        for options, _ in refused:
            async with s.post(f"{opened.url}/api/sessions", json={"options": options}) as r:
                assert r.status == 201, await r.text()
