"""Ingest benchmark: how fast and how cheaply the server takes audio in over the WebSocket.

``python -m benchmarks ingest [--streams 50] [--seconds 60] [--fast-mb 200]
[--stop-seconds 3600] [--encoding binary|base64] [--out benchmarks/results/ingest.json]``

Three phases, each against its own fresh server process (``--pipeline renditions``, on a
free 127.0.0.1 port, data in a temporary directory removed afterwards):

1. **fast** — one client streams ``--fast-mb`` MB (10^6 bytes) of deterministic 16 kHz mono
   s16le PCM in 64 KiB chunks as fast as the server takes them, once as base64 JSON
   ``audio_chunk`` messages and once as binary frames.  The clock runs from the first
   chunk to the server's reply to a ``{"action": "nop"}`` sent after the last chunk (the
   server handles a connection's messages in order and answers an unknown action with an
   ``error``, so that reply confirms every chunk).  ``stop`` (which decodes the part into
   ``audio.wav``) is timed separately.
2. **realtime** — ``--streams`` clients, each streaming ``--seconds`` of PCM in real time
   (250 ms = 8000-byte chunks on absolute deadlines, start phases spread evenly over one
   chunk period).  psutil measures the server process (and separately its children, the
   processing workers): CPU seconds over the streaming window / wall time, resident
   memory before the clients connect and at peak (sampled every 0.5 s).  Clients time
   each ``progress`` reply from the send of the chunk it counts.  After ``stop`` every
   session's ``part-000.raw`` and ``audio.wav`` are compared byte for byte with what its
   client sent.
3. **stop** — one client sends ``--stop-seconds`` (default 1 hour) of 16 kHz mono PCM as
   binary frames, then ``stop``: the server process's resident memory just before
   ``stop`` and its peak until ``recording_stopped`` (the kernel's high-water mark
   ``VmHWM``, reset through ``/proc/PID/clear_refs`` before ``stop``; a 0.05 s sampler
   where that is refused) give the growth a ``stop`` costs.  Then the MP4 rendition is
   requested (``GET .../audio?format=mp4``, made on demand by the server) and measured
   the same way.  Target: growth at most 64 MB, whatever the recording's length.

Prints the figures and a markdown table (``--table results.json`` re-prints the table
of an earlier run without measuring) and writes everything to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Sequence

import aiohttp
import psutil

from benchmarks import (machine_info, machine_stamp, marks_partial, output_arguments,
                        recorded_options, reprinted, server_env, server_source_digest,
                        write_results)
from benchmarks.measure import (
    MB,
    MemorySampler,
    PeakWindow,
    cpu_delta,
    cpu_snapshot,
    mb,
    ms,
    percentile,
    system_cpu_busy,
)
from benchmarks.timing_client import (BYTES_PER_SECOND, TimingClient, chunks, payloads,
                                      pcm_signal, send, verify_on_disk)
from workbench.engine.audio import SAMPLE_RATE
from workbench.notebook.local_server import LocalServer

NAME = "ingest"
FAST_CHUNK = 64 * 1024
RT_CHUNK_SECONDS = 0.25
RT_CHUNK = int(BYTES_PER_SECOND * RT_CHUNK_SECONDS)  # 8000 bytes
SAMPLE_EVERY = 0.5
DEFAULT_SERVER_MAX_DURATION = 3600.0
DEFAULT_SERVER_MAX_TOTAL = 500 * 1024 * 1024

TARGETS = {"cpu_percent_of_one_core": 25.0, "rss_growth_mb_per_stream": 2.0, "lost_bytes": 0,
           "stop_rss_growth_mb": 64.0}


# ---------------------------------------------------------------------------- phase 1: fast


def server_args_for(total_bytes: int) -> list[str]:
    """``--pipeline renditions``, plus limits raised when one recording would exceed them."""
    args = ["--pipeline", "renditions"]
    seconds = total_bytes / BYTES_PER_SECOND
    if seconds >= DEFAULT_SERVER_MAX_DURATION:
        args += ["--max-duration", str(math.ceil(seconds * 1.1))]
    if total_bytes > DEFAULT_SERVER_MAX_TOTAL:
        args += ["--max-total-bytes", str(math.ceil(total_bytes * 1.1))]
    return args


async def fast_phase(server: LocalServer, monitor: MemorySampler, data: bytes, wire: list[Any],
                     encoding: str, timeout: float, rep: int) -> dict[str, Any]:
    wire_bytes = sum(len(p) for p in wire)
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(f"{server.ws_url}/ws/bench-fast-{encoding}-{rep}",
                                      max_msg_size=0, compress=0)
        client = TimingClient(ws)
        try:
            await client.start()
            proc = psutil.Process(monitor.proc.pid)  # not shared with the sampling thread
            cpu0, sys0, client0 = cpu_snapshot(proc), psutil.cpu_times(), time.process_time()
            monitor.sample()
            t0 = time.perf_counter()
            for i, p in enumerate(wire, 1):
                if i % 100 == 0:
                    client.sent_at[i] = time.perf_counter()
                await send(ws, p)
            t_sent = time.perf_counter()
            t_confirmed = await client.confirm(timeout)
            cpu1, sys1, client1 = cpu_snapshot(proc), psutil.cpu_times(), time.process_time()
            monitor.sample()
            t_before_stop = time.perf_counter()
            stop = await client.stop(timeout)
            monitor.sample()
            t_stopped = time.perf_counter()
            # let the (light) renditions run finish so the next repetition starts on a quiet server
            _, done = await client.expect(("processing_complete", "processing_failed"), timeout)
        finally:
            await client.close()
    cpu = cpu_delta(cpu0, cpu1)
    elapsed = t_confirmed - t0
    assert client.session_id is not None
    check = verify_on_disk(server.data_dir / "sessions" / client.session_id, data)
    lat = client.progress_latency
    return {
        "encoding": encoding,
        "payload_bytes": len(data),
        "wire_bytes": wire_bytes,
        "chunk_bytes": FAST_CHUNK,
        "chunks": len(wire),
        "seconds_to_confirmation": round(elapsed, 3),
        "seconds_client_sending": round(t_sent - t0, 3),
        "mb_per_s": round(len(data) / MB / elapsed, 1),
        "wire_mb_per_s": round(wire_bytes / MB / elapsed, 1),
        "audio_x_realtime": round(len(data) / BYTES_PER_SECOND / elapsed),
        "server_cpu_s": round(cpu["server_cpu_s"], 2),
        "server_system_cpu_s": round(cpu["server_system_cpu_s"], 2),
        "server_cpu_percent_of_one_core": round(100 * cpu["server_cpu_s"] / elapsed, 1),
        "server_cpu_ms_per_mb": round(1000 * cpu["server_cpu_s"] / (len(data) / MB), 2),
        "children_cpu_s": round(cpu["children_cpu_s"], 2),
        "client_cpu_s": round(client1 - client0, 2),
        "system_cpu_busy_percent": system_cpu_busy(sys0, sys1),
        "progress_latency_ms": {"n": len(lat), "p50": ms(percentile(lat, 50)),
                                "p99": ms(percentile(lat, 99)), "max": ms(max(lat) if lat else None)},
        "stop_to_recording_stopped_s": round(stop["stop_s"], 3),
        "mb_per_s_including_stop": round(len(data) / MB / (elapsed + stop["stop_s"]), 1),
        "stop_to_processing_started_s": round(stop["processing_started_s"], 3),
        "recording_stopped": stop["stopped"],
        "processing": done["type"],
        "rss_mb_peak_streaming": monitor.peak(t0 - 0.1, t_before_stop)["rss_mb"],
        "rss_mb_peak_stop": monitor.peak(t_before_stop, t_stopped)["rss_mb"],
        "server_errors": client.errors,
        "verify": check,
    }


def run_fast(args: argparse.Namespace, data_root: Path) -> dict[str, Any]:
    n_bytes = int(args.fast_mb * MB) // 2 * 2
    print(f"[fast] generating {mb(n_bytes)} MB of PCM (seed {args.seed}); "
          f"{args.fast_repeat} run(s) per encoding", flush=True)
    data = pcm_signal(n_bytes, args.seed)
    out: dict[str, Any] = {"server_args": server_args_for(n_bytes), "server_env": server_env(),
                           "repeat": args.fast_repeat}
    timeout = max(300.0, args.fast_mb * 3.0)
    for encoding in ("base64", "binary"):
        wire = payloads(data, FAST_CHUNK, encoding)  # built before the clock starts
        server = LocalServer(data_root / f"fast-{encoding}", args=out["server_args"],
                             env=out["server_env"])
        server.start()
        runs: list[dict[str, Any]] = []
        try:
            assert server.process is not None
            with MemorySampler(server.process.pid, SAMPLE_EVERY) as monitor:
                time.sleep(1.0)  # let the worker process finish starting
                rss0 = monitor.settled_rss()
                for rep in range(args.fast_repeat):
                    r = asyncio.run(asyncio.wait_for(
                        fast_phase(server, monitor, data, wire, encoding, timeout, rep),
                        timeout * 3))
                    v = r["verify"]
                    print(f"[fast] {encoding:>6} #{rep + 1}: {r['mb_per_s']} MB/s of audio "
                          f"({r['seconds_to_confirmation']} s, server CPU "
                          f"{r['server_cpu_percent_of_one_core']} % of a core, "
                          f"{r['server_cpu_ms_per_mb']} ms/MB, machine busy "
                          f"{r['system_cpu_busy_percent']} %); stop "
                          f"{r['stop_to_recording_stopped_s']} s; RSS peak streaming "
                          f"{r['rss_mb_peak_streaming']} MB, at stop {r['rss_mb_peak_stop']} MB; "
                          f"raw exact {v['raw_exact']}, wav exact {v['wav_exact']}", flush=True)
                    runs.append(r)
        finally:
            server.stop()
        del wire
        rates = [r["mb_per_s"] for r in runs]
        median_run = sorted(runs, key=lambda r: r["mb_per_s"])[(len(runs) - 1) // 2]
        out[encoding] = {
            **median_run,  # the figures of the median run (by rate)
            "mb_per_s": round(statistics.median_low(rates), 1),
            "mb_per_s_runs": rates,
            "mb_per_s_best": max(rates),
            "rss_mb_baseline": mb(rss0),
            "rss_mb_peak_streaming_first_run": runs[0]["rss_mb_peak_streaming"],
            "rss_mb_peak_stop_first_run": runs[0]["rss_mb_peak_stop"],
            "stop_to_recording_stopped_s_runs": [r["stop_to_recording_stopped_s"] for r in runs],
            "verify": {"raw_exact": all(r["verify"]["raw_exact"] for r in runs),
                       "wav_exact": all(r["verify"]["wav_exact"] for r in runs),
                       "lost_bytes": sum(r["verify"]["lost_bytes"] for r in runs),
                       "runs": [r["verify"] for r in runs]},
            "server_errors": [e for r in runs for e in r["server_errors"]],
        }
    return out


# ---------------------------------------------------------------------------- phase 2: realtime


async def realtime_client(session: aiohttp.ClientSession, server: LocalServer, index: int
                          ) -> TimingClient:
    ws = await session.ws_connect(f"{server.ws_url}/ws/bench-rt-{index}", max_msg_size=0,
                                  compress=0)
    client = TimingClient(ws, index)
    await client.start()
    return client


async def stream_realtime(client: TimingClient, wire: list[Any], first_deadline: float,
                          lags: list[float], timeout: float) -> float:
    """Send chunk k at ``first_deadline + k * 250 ms`` (absolute: no drift); returns the
    time the server confirmed the last chunk."""
    for k, p in enumerate(wire):
        deadline = first_deadline + k * RT_CHUNK_SECONDS
        delay = deadline - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        now = time.perf_counter()
        lags.append(now - deadline)
        n = k + 1
        if n % 100 == 0:
            client.sent_at[n] = now
        await send(client.ws, p)
    return await client.confirm(timeout)


async def realtime_phase(server: LocalServer, monitor: MemorySampler, datas: list[bytes],
                         encoding: str, seconds: float) -> dict[str, Any]:
    streams = len(datas)
    wires = [payloads(d, RT_CHUNK, encoding) for d in datas]
    timeout = 60.0
    t_connect = time.perf_counter()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        clients: list[TimingClient] = []
        try:
            for i in range(streams):  # one after another: a clean "after connect" figure
                clients.append(await realtime_client(session, server, i))
            connected_s = time.perf_counter() - t_connect
            await asyncio.sleep(1.0)
            rss_connected = monitor.settled_rss(n=2, pause=0.2)
            lags: list[float] = []
            t0 = time.perf_counter() + 0.5
            await asyncio.sleep(0.45)
            proc = psutil.Process(monitor.proc.pid)  # not shared with the sampling thread
            cpu0, sys0, client0 = cpu_snapshot(proc), psutil.cpu_times(), time.process_time()
            monitor.sample()
            phase = RT_CHUNK_SECONDS / streams
            confirmed = await asyncio.wait_for(asyncio.gather(*(
                stream_realtime(c, w, t0 + i * phase, lags, timeout)
                for i, (c, w) in enumerate(zip(clients, wires)))), seconds + timeout)
            cpu1, sys1, client1 = cpu_snapshot(proc), psutil.cpu_times(), time.process_time()
            monitor.sample()
            t_before_stop = time.perf_counter()
            stops = await asyncio.wait_for(asyncio.gather(*(c.stop(timeout) for c in clients)),
                                           timeout * 2)
            monitor.sample()
            t_stopped = time.perf_counter()
        finally:
            await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    cpu = cpu_delta(cpu0, cpu1)
    wall = cpu["wall_s"]
    checks = [verify_on_disk(server.data_dir / "sessions" / c.session_id, d)  # type: ignore[operator]
              for c, d in zip(clients, datas)]
    latencies = [x for c in clients for x in c.progress_latency]
    expected_progress = streams * (len(wires[0]) // 100)
    stop_s = [s["stop_s"] for s in stops]
    expected_chunks = len(wires[0])
    return {
        "connect_all_s": round(connected_s, 2),
        "rss_mb_after_connect": mb(rss_connected),
        "window_s": round(wall, 2),
        "server_cpu_s": round(cpu["server_cpu_s"], 2),
        "server_system_cpu_s": round(cpu["server_system_cpu_s"], 2),
        "server_cpu_percent_of_one_core": round(100 * cpu["server_cpu_s"] / wall, 2),
        "server_cpu_ms_per_chunk": round(1000 * cpu["server_cpu_s"] / sum(len(w) for w in wires), 3),
        "children_cpu_s": round(cpu["children_cpu_s"], 2),
        "children_cpu_percent_of_one_core": round(100 * cpu["children_cpu_s"] / wall, 2),
        "client_cpu_percent_of_one_core": round(100 * (client1 - client0) / wall, 1),
        "system_cpu_busy_percent": system_cpu_busy(sys0, sys1),
        "peak_streaming": monitor.peak(t0 - 0.1, t_before_stop),
        "peak_stop": monitor.peak(t_before_stop, t_stopped),
        "last_confirmation_after_window_start_s": round(max(confirmed) - t0, 2),
        "progress_latency_ms": {
            "n": len(latencies), "expected": expected_progress,
            "p50": ms(percentile(latencies, 50)), "p99": ms(percentile(latencies, 99)),
            "max": ms(max(latencies) if latencies else None)},
        "send_lag_ms": {"p50": ms(percentile(lags, 50)), "p99": ms(percentile(lags, 99)),
                        "max": ms(max(lags) if lags else None)},
        "stop_to_recording_stopped_s": {"p50": round(percentile(stop_s, 50) or 0, 3),
                                        "max": round(max(stop_s), 3)},
        "sent_bytes": sum(len(d) for d in datas),
        "raw_bytes_on_disk": sum(c["raw_bytes"] for c in checks),
        "lost_bytes": sum(c["lost_bytes"] for c in checks),
        "raw_exact_streams": sum(c["raw_exact"] for c in checks),
        "wav_exact_streams": sum(c["wav_exact"] for c in checks),
        "stopped_chunk_counts_ok": sum(s["stopped"].get("chunks_received") == expected_chunks
                                       for s in stops),
        "stopped_duration_ok": sum(abs(s["stopped"].get("duration_seconds", -1) - len(d) /
                                       BYTES_PER_SECOND) < 1e-3 for s, d in zip(stops, datas)),
        "server_errors": [e for c in clients for e in c.errors][:20],
        "server_error_count": sum(len(c.errors) for c in clients),
        "failed_streams": [i for i, c in enumerate(checks) if not (c["raw_exact"] and c["wav_exact"])
                           or c["extra_parts"]],
    }


def run_realtime(args: argparse.Namespace, data_root: Path) -> dict[str, Any]:
    n_chunks = max(1, round(args.seconds / RT_CHUNK_SECONDS))
    print(f"[realtime] {args.streams} streams x {n_chunks * RT_CHUNK_SECONDS:g} s "
          f"({args.encoding}, {RT_CHUNK}-byte chunks every {RT_CHUNK_SECONDS * 1000:g} ms)",
          flush=True)
    datas = [pcm_signal(n_chunks * RT_CHUNK, args.seed + 1 + i) for i in range(args.streams)]
    server_args = server_args_for(n_chunks * RT_CHUNK)
    env = server_env(args.streams)
    server = LocalServer(data_root / "realtime", args=server_args, env=env)
    server.start()
    try:
        assert server.process is not None
        with MemorySampler(server.process.pid, SAMPLE_EVERY) as monitor:
            time.sleep(1.0)  # let the worker process finish starting
            rss0 = monitor.settled_rss()
            kids0 = monitor.samples[-1][2]
            r = asyncio.run(realtime_phase(server, monitor, datas, args.encoding,
                                           n_chunks * RT_CHUNK_SECONDS))
    finally:
        server.stop()
    r = {"server_args": server_args, "server_env": env, "encoding": args.encoding, "streams": args.streams,
         "seconds": n_chunks * RT_CHUNK_SECONDS, "chunk_bytes": RT_CHUNK,
         "chunks_per_stream": n_chunks, "rss_mb_baseline": mb(rss0),
         "children_rss_mb_baseline": mb(kids0), **r}
    peak = r["peak_streaming"]["rss_mb"]
    r["rss_growth_mb_per_stream"] = (round((peak - r["rss_mb_baseline"]) / args.streams, 3)
                                     if peak is not None else None)
    lat = r["progress_latency_ms"]
    print(f"[realtime] server CPU {r['server_cpu_percent_of_one_core']} % of one core "
          f"(children {r['children_cpu_percent_of_one_core']} %) over {r['window_s']} s; "
          f"RSS {r['rss_mb_baseline']} MB -> {peak} MB peak "
          f"({r['rss_growth_mb_per_stream']} MB/stream); progress latency p50 {lat['p50']} ms, "
          f"p99 {lat['p99']} ms (n={lat['n']}); lost {r['lost_bytes']} bytes, "
          f"{r['raw_exact_streams']}/{args.streams} raw exact, "
          f"{r['wav_exact_streams']}/{args.streams} wav exact", flush=True)
    return r


# ---------------------------------------------------------------------------- phase 3: stop


async def stop_phase(server: LocalServer, data: bytes, timeout: float, mp4: bool) -> dict[str, Any]:
    assert server.process is not None
    pid = server.process.pid
    out: dict[str, Any] = {}
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(f"{server.ws_url}/ws/bench-stop", max_msg_size=0,
                                      compress=0)
        client = TimingClient(ws)
        try:
            await client.start()
            for p in chunks(data, FAST_CHUNK):
                await ws.send_bytes(p)
            await client.confirm(timeout)
            await asyncio.sleep(1.0)  # settle: the append thread idle, buffers returned
            with PeakWindow(pid) as window:
                stop = await client.stop(timeout)
            out["stop"] = {**window.figures(), "recording_stopped": stop["stopped"]}
            await client.expect(("processing_complete", "processing_failed"), timeout)
        finally:
            await client.close()
        assert client.session_id is not None
        out["verify"] = verify_on_disk(server.data_dir / "sessions" / client.session_id, data)
        if mp4:
            url = f"{server.url}/api/sessions/{client.session_id}/audio?format=mp4"
            rendition = server.data_dir / "sessions" / client.session_id / "audio.mp4"
            for key in ("mp4", "mp4_again"):
                # The first request also loads PyAV/FFmpeg into the server (a fixed cost);
                # the second, after the rendition is removed, encodes with them loaded.
                rendition.unlink(missing_ok=True)
                await asyncio.sleep(1.0)
                with PeakWindow(pid) as window:
                    async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as r:
                        size = 0
                        async for block in r.content.iter_chunked(1 << 16):
                            size += len(block)
                        status = r.status
                out[key] = {**window.figures(), "status": status, "bytes": size}
    return out


def run_stop(args: argparse.Namespace, data_root: Path) -> dict[str, Any]:
    n_bytes = int(args.stop_seconds * BYTES_PER_SECOND)
    print(f"[stop] {args.stop_seconds:g} s of 16 kHz mono PCM ({mb(n_bytes)} MB), then stop"
          + (" and the MP4 rendition" if args.stop_mp4 else ""), flush=True)
    data = pcm_signal(n_bytes, args.seed + 10_000)
    server_args = server_args_for(n_bytes)
    env = server_env()
    server = LocalServer(data_root / "stop", args=server_args, env=env)
    server.start()
    try:
        time.sleep(1.0)  # let the worker process finish starting
        r = asyncio.run(stop_phase(server, data, max(300.0, args.stop_seconds / 10), args.stop_mp4))
    finally:
        server.stop()
    r = {"server_args": server_args, "server_env": env, "seconds": args.stop_seconds,
         "payload_bytes": n_bytes, **r}
    st = r["stop"]
    print(f"[stop] server RSS {st['rss_mb_before']} MB before stop -> {st['rss_mb_peak']} MB peak "
          f"({st['peak_method']}): growth {st['rss_growth_mb']} MB; stop -> recording_stopped "
          f"{st['seconds']} s; audio.wav exact {r['verify']['wav_exact']}", flush=True)
    for key, label in (("mp4", "first"), ("mp4_again", "again")):
        if key in r:
            m = r[key]
            print(f"[stop] MP4 rendition ({label}): HTTP {m['status']}, {mb(m['bytes'])} MB in "
                  f"{m['seconds']} s; server RSS growth {m['rss_growth_mb']} MB", flush=True)
    return r


# ---------------------------------------------------------------------------- table


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "—"
    return f"{v:g}{unit}" if isinstance(v, (int, float)) else f"{v}{unit}"


@marks_partial
def markdown_table(results: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str]] = []
    fast = results.get("fast")
    if fast:
        for enc, label in (("base64", "base64 JSON"), ("binary", "binary frames")):
            r = fast.get(enc)
            if not r:
                continue
            size = f"{mb(r['payload_bytes']):g} MB"
            runs = ", ".join(_fmt(x) for x in r.get("mb_per_s_runs", [r["mb_per_s"]]))
            rows.append((f"Fast, 1 client, {label}, 64 KiB chunks: audio ingest rate "
                         f"(median of {len(r.get('mb_per_s_runs', [1]))})",
                         f"**{_fmt(r['mb_per_s'], ' MB/s')}** (runs {runs}; median run: {size} in "
                         f"{_fmt(r['seconds_to_confirmation'], ' s')}, "
                         f"{_fmt(r['audio_x_realtime'])}× real time, machine "
                         f"{_fmt(r['system_cpu_busy_percent'], ' %')} busy)", ""))
            rows.append((f"Fast, {label}: server CPU per MB / during the run",
                         f"{_fmt(r['server_cpu_ms_per_mb'], ' ms/MB')} / "
                         f"{_fmt(r['server_cpu_percent_of_one_core'], ' %')} of one core", ""))
            rows.append((f"Fast, {label}: server RSS baseline → peak streaming → peak at stop "
                         "(first run)",
                         f"{_fmt(r['rss_mb_baseline'])} → "
                         f"{_fmt(r.get('rss_mb_peak_streaming_first_run'))} → "
                         f"{_fmt(r.get('rss_mb_peak_stop_first_run'), ' MB')}", ""))
            stops = r.get("stop_to_recording_stopped_s_runs", [r["stop_to_recording_stopped_s"]])
            rows.append((f"Fast, {label}: `stop` → `recording_stopped` (decodes {size} to "
                         "audio.wav), each run", ", ".join(_fmt(x) for x in stops) + " s", ""))
            v = r["verify"]
            rows.append((f"Fast, {label}: bytes on disk", "part-000.raw " +
                         ("exact" if v["raw_exact"] else f"**differs, {v['lost_bytes']} lost**") +
                         ", audio.wav " + ("exact" if v["wav_exact"] else "**differs**"), "exact"))
    rt = results.get("realtime")
    if rt:
        n = rt["streams"]
        t = results.get("targets", TARGETS)
        lat = rt["progress_latency_ms"]
        lag = rt["send_lag_ms"]
        rows += [
            (f"Real time: {n} streams × {rt['seconds']:g} s, {rt['encoding']}, 8000-byte chunks / 250 ms",
             f"{_fmt(rt['window_s'], ' s')} window", ""),
            ("Real time: server CPU (% of one core)", f"**{_fmt(rt['server_cpu_percent_of_one_core'], ' %')}**"
             f" ({_fmt(rt['server_cpu_s'], ' CPU-s')}, of which kernel "
             f"{_fmt(rt.get('server_system_cpu_s'), ' s')}; "
             f"{_fmt(rt.get('server_cpu_ms_per_chunk'), ' ms')} per chunk)",
             f"< {t['cpu_percent_of_one_core']:g} %"),
            ("Real time: worker children CPU (% of one core)",
             _fmt(rt["children_cpu_percent_of_one_core"], " %"), ""),
            ("Real time: server RSS before connect → after connect → peak streaming",
             f"{_fmt(rt['rss_mb_baseline'])} → {_fmt(rt['rss_mb_after_connect'])} → "
             f"{_fmt(rt['peak_streaming']['rss_mb'], ' MB')}", ""),
            ("Real time: RSS growth per stream ((peak − baseline) / streams)",
             f"**{_fmt(rt['rss_growth_mb_per_stream'], ' MB')}**",
             f"< {t['rss_growth_mb_per_stream']:g} MB"),
            ("Real time: server RSS peak during the concurrent stops",
             _fmt(rt["peak_stop"]["rss_mb"], " MB"), ""),
            ("Real time: `progress` latency after the 100th/200th chunk, p50 / p99 / max",
             f"{_fmt(lat['p50'])} / {_fmt(lat['p99'])} / {_fmt(lat['max'], ' ms')} "
             f"(n = {lat['n']} of {lat['expected']})", ""),
            ("Real time: `stop` → `recording_stopped`, p50 / max",
             f"{_fmt(rt['stop_to_recording_stopped_s']['p50'])} / "
             f"{_fmt(rt['stop_to_recording_stopped_s']['max'], ' s')}", ""),
            ("Real time: bytes lost / streams byte-exact (raw, wav)",
             f"**{rt['lost_bytes']}** / {rt['raw_exact_streams']}/{n}, {rt['wav_exact_streams']}/{n} "
             f"({mb(rt['raw_bytes_on_disk']):g} of {mb(rt['sent_bytes']):g} MB on disk)",
             f"{t['lost_bytes']}, {n}/{n}"),
            ("Real time: server error messages", _fmt(rt["server_error_count"]), "0"),
            ("Real time: client send lag behind deadline, p99 / max",
             f"{_fmt(lag['p99'])} / {_fmt(lag['max'], ' ms')}", ""),
            ("Real time: whole machine CPU busy during the window (all cores; other load included)",
             _fmt(rt["system_cpu_busy_percent"], " %"), ""),
        ]
    sp = results.get("stop")
    if sp:
        t = results.get("targets", TARGETS)
        st = sp["stop"]
        size = f"{sp['seconds'] / 3600:g} h of 16 kHz mono PCM, {mb(sp['payload_bytes']):g} MB"
        rows += [
            (f"Stop of one recording ({size}): server RSS before `stop` → peak until "
             "`recording_stopped`", f"{_fmt(st['rss_mb_before'])} → {_fmt(st['rss_mb_peak'], ' MB')}"
             f" ({st['peak_method']})", ""),
            ("Stop: server RSS growth", f"**{_fmt(st['rss_growth_mb'], ' MB')}**",
             f"≤ {t.get('stop_rss_growth_mb', 64):g} MB"),
            ("Stop: `stop` → `recording_stopped` + `processing_started`, audio.wav",
             f"{_fmt(st['seconds'], ' s')}, audio.wav "
             + ("exact" if sp["verify"]["wav_exact"] else "**differs**"), "exact"),
        ]
        for key, label in (("mp4", "first request, loads PyAV/FFmpeg into the server"),
                           ("mp4_again", "made again, libraries loaded")):
            m4 = sp.get(key)
            if m4:
                rows.append((f"Stop: MP4 rendition on demand (`GET .../audio?format=mp4`, {label}): "
                             "server RSS growth, time", f"**{_fmt(m4['rss_growth_mb'], ' MB')}**, "
                             f"{_fmt(m4['seconds'], ' s')} (HTTP {m4['status']}, "
                             f"{_fmt(mb(m4['bytes']), ' MB')})",
                             f"≤ {t.get('stop_rss_growth_mb', 64):g} MB"))
    m = results.get("machine", {})
    head = (f"Measured {m.get('date', '?')} on {m.get('cpu_count', '?')} CPU(s) "
            f"({m.get('cpu_model', '?')}), Python {m.get('python', '?')}, "
            f"{m.get('platform', '?')}, commit {m.get('git_commit', '?')} "
            f"(server/*.py SHA-1 {results.get('server_source_sha1', '?')}). "
            f"Command: `{results.get('command', 'python -m benchmarks ingest')}`. "
            f"MB = 10^6 bytes.\n\nMachine: {machine_stamp(m) if m else '?'}.")
    lines = [head, "", "| Figure | Measured | Target |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    verdict = results.get("verdict")
    if verdict:
        lines += ["", "Targets: " + ", ".join(f"{k} {'met' if ok else '**missed**'}"
                                             for k, ok in verdict.items())]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks ingest",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", type=int, default=50, help="concurrent real-time clients (0: skip)")
    p.add_argument("--seconds", type=float, default=60.0, help="seconds of audio per real-time stream")
    p.add_argument("--fast-mb", type=float, default=200.0,
                   help="MB (10^6 bytes) for the one-client fast run (0: skip)")
    p.add_argument("--fast-repeat", type=int, default=3,
                   help="fast runs per encoding (the median rate is reported)")
    p.add_argument("--stop-seconds", type=float, default=3600.0,
                   help="seconds of 16 kHz PCM in the recording whose `stop` is measured (0: skip)")
    p.add_argument("--no-stop-mp4", dest="stop_mp4", action="store_false",
                   help="skip measuring the on-demand MP4 rendition of that recording")
    p.add_argument("--encoding", choices=("binary", "base64"), default="binary",
                   help="how the real-time clients send chunks (default: binary frames)")
    p.add_argument("--seed", type=int, default=1234)
    output_arguments(p, NAME)
    p.add_argument("--data-dir", type=Path, default=None,
                   help="parent of the servers' data directories (default: a temporary one)")
    p.add_argument("--keep-data", action="store_true", help="keep the servers' data directories")
    a = p.parse_args(list(argv))
    if (a.streams < 0 or a.seconds <= 0 or a.fast_mb < 0 or not 1 <= a.fast_repeat <= 10
            or a.stop_seconds < 0):
        p.error("--streams, --fast-mb and --stop-seconds must be >= 0, --seconds > 0, "
                "--fast-repeat 1..10")
    if a.streams > 1000 or a.seconds > 3600 or a.fast_mb > 2000 or a.stop_seconds > 4 * 3600:
        p.error("bounded: at most 1000 streams, 3600 s, 2000 MB, --stop-seconds 14400")
    return a


def main(argv: Sequence[str] = ()) -> int:
    args = parse_args(argv)
    if reprinted(args, markdown_table, NAME):
        return 0
    command = "python -m benchmarks ingest " + " ".join(argv)
    results: dict[str, Any] = {
        "benchmark": NAME,
        "command": command.strip(),
        "machine": machine_info(),
        "server_source_sha1": server_source_digest(),
        "parameters": {"streams": args.streams, "seconds": args.seconds, "fast_mb": args.fast_mb,
                       "fast_repeat": args.fast_repeat, "stop_seconds": args.stop_seconds,
                       "stop_mp4": args.stop_mp4, "encoding": args.encoding, "seed": args.seed, "fast_chunk_bytes": FAST_CHUNK,
                       "realtime_chunk_bytes": RT_CHUNK, "sample_rate": SAMPLE_RATE,
                       "rss_sample_interval_s": SAMPLE_EVERY, "mb": MB},
        "options": recorded_options(args),
        "targets": TARGETS,
        "caveats": [
            "Client and server share the machine's CPUs (loopback); other jobs may run at the same "
            "time: see system_cpu_busy_percent and load averages.",
            "Server CPU excludes the client; children (processing workers) are reported separately.",
            "RSS is sampled every 0.5 s (and at the edges of each window), so short peaks can be "
            "missed.",
            "Server limits adjusted for the benchmark (see server_args / server_env): the per-address "
            "connection limit is off (every client is 127.0.0.1) and --max-duration is raised when "
            "the fast upload holds more than 1 h of 16 kHz mono audio.",
            "Fast-run rates depend strongly on concurrent load; server CPU per MB is the steadier "
            "figure.",
        ],
    }
    own_root = args.data_dir is None
    root = Path(tempfile.mkdtemp(prefix="bench-ingest-")) if own_root else args.data_dir
    root.mkdir(parents=True, exist_ok=True)
    status = 0
    try:
        if args.fast_mb > 0:
            results["fast"] = run_fast(args, root)
        if args.streams > 0:
            results["realtime"] = run_realtime(args, root)
        if args.stop_seconds > 0:
            results["stop"] = run_stop(args, root)
    except Exception as exc:
        status = 1
        results["error"] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
        for log in sorted(root.glob("*/server.log")):
            tail = log.read_text(errors="replace").splitlines()[-15:]
            print(f"--- {log} (tail)\n" + "\n".join(tail), file=sys.stderr)
    finally:
        if own_root and not args.keep_data:
            shutil.rmtree(root, ignore_errors=True)
        elif args.keep_data:
            print(f"data kept in {root}")
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]

    verdict: dict[str, bool] = {}
    rt = results.get("realtime")
    if rt:
        verdict["cpu < 25 % of one core"] = rt["server_cpu_percent_of_one_core"] < TARGETS[
            "cpu_percent_of_one_core"]
        growth = rt["rss_growth_mb_per_stream"]
        verdict["memory < 2 MB per stream"] = growth is not None and growth < TARGETS[
            "rss_growth_mb_per_stream"]
        verdict["nothing lost"] = (rt["lost_bytes"] == 0 and not rt["failed_streams"]
                                   and rt["raw_exact_streams"] == rt["streams"])
    sp = results.get("stop")
    if sp:
        growth = sp["stop"]["rss_growth_mb"]
        verdict["stop growth ≤ 64 MB"] = growth is not None and growth <= TARGETS["stop_rss_growth_mb"]
        for key in ("mp4", "mp4_again"):
            if key in sp:
                g = sp[key]["rss_growth_mb"]
                verdict[f"{key} rendition growth ≤ 64 MB"] = (
                    g is not None and g <= TARGETS["stop_rss_growth_mb"])
        verdict["stop byte-exact"] = sp["verify"]["raw_exact"] and sp["verify"]["wav_exact"]
    for enc, r in (results.get("fast") or {}).items():
        if isinstance(r, dict) and "verify" in r:
            verdict[f"fast {enc} byte-exact"] = r["verify"]["raw_exact"] and r["verify"]["wav_exact"]
    results["verdict"] = verdict
    if not all(v for k, v in verdict.items() if "exact" in k or "lost" in k):
        status = 1
    out = write_results(args.out, results)
    print(f"results written to {out}\n")
    print(markdown_table(results))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
