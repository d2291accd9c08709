"""`LiveConfig` and its sections built from plain options (the server's --live-config, the
live worker's spec, the benchmarks' --asr / --diarization): each option checked and named."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.engine.config import ConfigError
from workbench.live.config import LiveConfig
from workbench.live.diarization import OnlineDiarizationConfig


def test_live_options_of_the_wrong_type_are_refused_by_name() -> None:
    """`LiveConfig.from_dict` (the server's --live-config, the benchmarks' --asr) checks
    each option's type as the run configuration does: the string "false" for a switch was
    truthy and passed, "5" for a latency failed later in a comparison naming nothing."""
    for options, field, said in (
            ({"asr": {"lag_between_passes": "false"}}, "asr.lag_between_passes",
             "'asr.lag_between_passes' must be true or false"),
            ({"diarization": {"latency": "5"}}, "diarization.latency",
             "'diarization.latency' must be a number"),
            ({"diarization": {"max_speakers": 2.5}}, "diarization.max_speakers",
             "'diarization.max_speakers' must be an integer"),
            ({"asr": {"model": None}}, "asr.model", "'asr.model' must be a string, not null"),
            ({"diarize": "yes"}, "diarize", "'diarize' must be true or false"),
            ({"asr": [1]}, "asr", "'asr' must be a JSON object"),
            ({"asr": {"nope": 1}}, "asr.nope", "unknown ASR option"),
            ({"nope": 1}, "nope", r"unknown live option\(s\): nope \(known: asr, "),
            # (a range only the class checks: named by its section)
            ({"asr": {"gap_speech": 0}}, "asr", "asr: gap_speech must be > 0"),
            ({"diarization": {"latency": 20}}, "diarization",
             r"diarization: latency must be in \[step, window\]"),
            ("{}", None, "live options must be a JSON object")):
        with pytest.raises(ConfigError, match=said) as caught:
            LiveConfig.from_dict(options)
        assert caught.value.field == field
    # an integer for a number, None where None is allowed, NumPy scalars: taken
    config = LiveConfig.from_dict({"asr": {"max_word_lag": 2, "encoder_pad": None},
                                   "diarization": {"latency": np.float32(5.0)},
                                   "speaker_tolerance": 1})
    assert config.asr.max_word_lag == 2.0 and isinstance(config.asr.max_word_lag, float)
    assert config.diarization.latency == 5.0 and config.speaker_tolerance == 1.0
    config = LiveConfig(diarization=OnlineDiarizationConfig(latency=5.0), diarize=False)
    assert LiveConfig.from_dict(config.serialize()) == config


def test_the_latency_presets_check_their_overrides_too() -> None:
    """`OnlineDiarizationConfig.for_latency(latency, **overrides)` (the simulated-clock
    benchmark's --diarization) took the string "False" for a switch."""
    with pytest.raises(ConfigError, match="'diarization.fill_speech' must be true or false"):
        OnlineDiarizationConfig.for_latency(5.0, fill_speech="False")
    with pytest.raises(ConfigError, match="unknown diarization option"):
        OnlineDiarizationConfig.for_latency(5.0, nope=1)
    assert OnlineDiarizationConfig.for_latency(5, fill_speech=False).latency == 5.0


def test_a_latency_that_is_no_positive_number_is_refused_by_name() -> None:
    """`stream_file(latency=0)` said "need 0 < step <= window <= 10", naming no latency."""
    for latency in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="latency must be a positive number of seconds"):
            LiveConfig.for_latency(latency)
    assert LiveConfig.for_latency(0.5).diarization.latency == 0.5
