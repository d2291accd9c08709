"""Load benchmark: many concurrent real-time recordings against one server, on loopback.

``python -m benchmarks load [--streams 200] [--seconds 60] [--chunk-ms 250]
[--progress-every 20] [--nop-every 5] [--spread S] [--out benchmarks/results/load.json]``

One fresh server process (``--pipeline renditions``, a free 127.0.0.1 port, data in a
temporary directory removed afterwards; the per-client connection limit and the
recording limit are lifted because every client shares the loopback address).
``--streams`` clients each declare a ``live`` 16 kHz mono s16le recording and send
``--seconds`` of deterministic noise in ``--chunk-ms`` binary chunks on absolute
deadlines, like browsers with MediaRecorder time slices.  Start phases are spread evenly
over ``--spread`` seconds (default: one ``progress`` period, as if the clients had started
at independent moments; ``--spread 0.25`` makes every client's confirmations fall in the
same quarter second, a thundering herd).  Measured:

* **lost bytes**: after ``stop`` every session's ``part-000.raw`` and the payload of its
  ``audio.wav`` are hashed and compared with what its client sent (SHA-256 and length);
* **reply latency**: time from sending the chunk a ``progress`` message counts to that
  message's arrival, and the round trip of a ``{"action": "nop"}`` (answered with an
  ``Unknown action`` error) sent every ``--nop-every`` seconds: p50/p90/p99/max;
* **send lateness**: how far behind its schedule the load generator itself ran (if this is
  large, the client machine, not the server, was the bottleneck);
* **server resources** (psutil): CPU seconds over the streaming window / wall time, as % of
  one core, for the server process and its worker children; resident memory before the
  clients connect, at peak while streaming and at peak including every ``stop``'s
  finalisation (sampled every 0.5 s); the same for this client process.

Then, on a second fresh server (``--stalls``, the default; ``--stalls-only`` skips the
streams), the **largest gap in a live stream's replies** while the server does something
heavy: a probe WebSocket sends ``{"action": "nop"}`` every ``--probe-ms`` and times each
``Unknown action`` reply, through

* **a REST run**: ``POST /api/sessions/{id}/runs`` with a configuration, the first one
  in that server (a run configuration once imported torch in the handler), plus a bad
  one that must get a 400;
* **a long upload and its ``stop``**: ``--stall-seconds`` (default one hour) of 16 kHz
  PCM sent as fast as the loopback takes it, then ``stop`` (which decodes it all into
  ``audio.wav``) until ``recording_stopped``.

For each window: the largest gap between two replies, the largest round trip and the
number of probes (target: gap <= 50 ms).

Prints the figures and writes them with the machine description to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import multiprocessing
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import aiohttp
import numpy as np
import psutil

from benchmarks import RESULTS_DIR, machine_info, machine_stamp, output_arguments, reprinted, write_results
from benchmarks.measure import MB, MemorySampler, cpu_delta, cpu_seconds, cpu_snapshot, latency_summary
from workbench.engine.audio import SAMPLE_RATE
from workbench.client import AsyncClient
from workbench.notebook.local_server import LocalServer

NAME = "load"
BYTES_PER_SECOND = SAMPLE_RATE * 2
UNKNOWN_ACTION = 4000
WAV_HEADER = 44  # workbench.engine.audio.write_wav: the canonical 44-byte header


@dataclass
class Stream:
    """One client: what it sent (as a running hash) and what it measured."""

    index: int
    session_id: Optional[str] = None
    sent_bytes: int = 0
    digest: Any = field(default_factory=hashlib.sha256)
    chunk_sent_at: dict[int, float] = field(default_factory=dict)
    progress_latency: list[float] = field(default_factory=list)
    nop_latency: list[float] = field(default_factory=list)
    lateness: list[float] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    stop_latency: Optional[float] = None
    failure: Optional[str] = None


def chunk_source(index: int, chunk_bytes: int):  # type: ignore[no-untyped-def]
    """Deterministic noise for stream ``index``, one chunk at a time (nothing kept in memory)."""
    rng = np.random.default_rng(1000 + index)
    while True:
        yield rng.integers(-8192, 8192, size=chunk_bytes // 2, dtype=np.int16).astype("<i2").tobytes()


async def run_stream(url: str, st: Stream, args: argparse.Namespace, t0: float,
                     phase: float) -> None:
    """One live stream on its own WebSocket.  Hand-written rather than
    :mod:`workbench.client`: it sends on absolute deadlines shifted by ``phase``, times the
    ``progress`` of chunks it sent and interleaves ``nop`` probes, none of which that
    client exposes."""
    chunk_s = args.chunk_ms / 1000
    chunk_bytes = int(BYTES_PER_SECOND * chunk_s)
    n_chunks = int(round(args.seconds / chunk_s))
    nop_every = max(1, int(round(args.nop_every / chunk_s)))
    source = chunk_source(st.index, chunk_bytes)
    nops: list[float] = []
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def read(ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            now = loop.time()
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            m = json.loads(msg.data)
            kind = m.get("type")
            if kind == "progress":
                sent = st.chunk_sent_at.pop(m["chunks_received"], None)
                if sent is not None:
                    st.progress_latency.append(now - sent)
            elif kind == "error" and m.get("code") == UNKNOWN_ACTION and nops:
                st.nop_latency.append(now - nops.pop(0))
            elif kind == "error":
                st.errors.append(m)
            elif kind == "recording_stopped":
                st.stop_latency = now - stop_sent
                stopped.set()

    stop_sent = 0.0
    try:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(url, heartbeat=None, max_msg_size=0) as ws:
                await ws.send_json({"action": "start", "format": "wav", "input_format": "pcm_s16le",
                                    "sample_rate": SAMPLE_RATE, "channels": 1, "live": True})
                started = json.loads((await ws.receive(timeout=60)).data)
                if started.get("type") != "recording_started":
                    raise RuntimeError(f"start refused: {started}")
                st.session_id = started["session_id"]
                reader = asyncio.create_task(read(ws))
                start_at = t0 + phase
                for i in range(n_chunks):
                    due = start_at + i * chunk_s
                    delay = due - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    st.lateness.append(max(0.0, loop.time() - due))
                    data = next(source)
                    st.digest.update(data)
                    st.sent_bytes += len(data)
                    if (i + 1) % args.progress_every == 0:  # the chunks `progress` counts
                        st.chunk_sent_at[i + 1] = loop.time()
                    await ws.send_bytes(data)
                    if (i + 1) % nop_every == nop_every // 2:  # between confirmations
                        nops.append(loop.time())
                        await ws.send_str('{"action": "nop"}')
                stop_sent = loop.time()
                await ws.send_str('{"action": "stop"}')
                await asyncio.wait_for(stopped.wait(), 120)
                await ws.close()
                await asyncio.wait_for(reader, 30)
    except Exception as exc:  # recorded, reported as a failed stream
        st.failure = f"{type(exc).__name__}: {exc}"


def verify(data_dir: Path, st: Stream) -> dict[str, Any]:
    """Hash the session's raw part and WAV payload; compare with what was sent."""
    if st.session_id is None:
        return {"raw_exact": False, "wav_exact": False, "lost_bytes": st.sent_bytes}
    d = data_dir / "sessions" / st.session_id
    raw = (d / "part-000.raw").read_bytes() if (d / "part-000.raw").exists() else b""
    wav = (d / "audio.wav").read_bytes() if (d / "audio.wav").exists() else b""
    want = st.digest.hexdigest()
    raw_exact = len(raw) == st.sent_bytes and hashlib.sha256(raw).hexdigest() == want
    wav_exact = (len(wav) == WAV_HEADER + st.sent_bytes
                 and hashlib.sha256(wav[WAV_HEADER:]).hexdigest() == want)
    # Not byte-exact: count what is missing, or everything when the content differs.
    lost = 0 if raw_exact else (st.sent_bytes - len(raw) if len(raw) < st.sent_bytes
                                else st.sent_bytes)
    return {"raw_exact": raw_exact, "wav_exact": wav_exact, "lost_bytes": lost}


async def measure(args: argparse.Namespace, srv: LocalServer) -> dict[str, Any]:
    assert srv.process is not None
    server = psutil.Process(srv.process.pid)
    me = psutil.Process()
    streams = [Stream(i) for i in range(args.streams)]
    loop = asyncio.get_running_loop()
    with MemorySampler(srv.process.pid, clock=time.monotonic) as sampler:
        time.sleep(1.0)
        baseline = sampler.sample()
        t0 = loop.time() + 3.0  # connect everyone first, then stream on the same clock
        # per pid: workers that come or go in the window are not subtracted or lost
        cpu0, me0 = cpu_snapshot(server), cpu_seconds(me, False)
        w0 = time.monotonic()
        tasks = [asyncio.create_task(run_stream(f"{srv.ws_url}/ws/load-{st.index}", st, args, t0,
                                                args.spread * st.index / max(1, args.streams)))
                 for st in streams]
        # Window: to the scheduled end of the last stream.
        await asyncio.sleep(max(0.0, t0 + args.spread + args.seconds - loop.time()))
        cpu1, me1 = cpu_snapshot(server), cpu_seconds(me, False)
        used = cpu_delta(cpu0, cpu1)
        w1 = time.monotonic()
        streaming = [s for s in sampler.samples if s.t <= w1]
        await asyncio.gather(*tasks)
        peak = max(streaming, key=lambda s: s.rss)
        peak_all = max(s.rss for s in sampler.samples)  # with every stop's finalisation
        peak_kids = max(s.children_rss for s in sampler.samples)
        peak_me = max(s.own_rss for s in sampler.samples)
    wall = w1 - w0
    checks = [verify(srv.data_dir, st) for st in streams]
    failed = [st for st in streams if st.failure]
    all_lat = [x for st in streams for x in st.progress_latency]
    all_nop = [x for st in streams for x in st.nop_latency]
    all_late = [x for st in streams for x in st.lateness]
    stop_lat = [st.stop_latency for st in streams if st.stop_latency is not None]
    total = sum(st.sent_bytes for st in streams)
    return {
        "streams_ok": sum(1 for c, st in zip(checks, streams) if c["raw_exact"] and c["wav_exact"]
                          and not st.failure),
        "streams_failed": len(failed),
        "failures": [st.failure for st in failed][:5],
        "protocol_errors": sum(len(st.errors) for st in streams),
        "sent_mb": round(total / MB, 2),
        "lost_bytes": sum(c["lost_bytes"] for c in checks),
        "raw_exact": sum(c["raw_exact"] for c in checks),
        "wav_exact": sum(c["wav_exact"] for c in checks),
        "progress_latency": latency_summary(all_lat),
        "nop_round_trip": latency_summary(all_nop),
        "stop_to_recording_stopped": latency_summary(stop_lat),
        "client_send_lateness": {**latency_summary(all_late),
                                 "over_50_ms": sum(1 for x in all_late if x > 0.05)},
        "server": {
            # The CPU window includes the 3 s of connecting and starting before t0, and the
            # start/end ramps of the spread.
            "cpu_percent_of_one_core": round(100 * used["server_cpu_s"] / wall, 1),
            "workers_cpu_percent_of_one_core": round(100 * used["children_cpu_s"] / wall, 1),
            "rss_mb_before": round(baseline.rss / MB, 1),
            "rss_mb_peak_streaming": round(peak.rss / MB, 1),
            "rss_mb_per_stream": round((peak.rss - baseline.rss) / MB / max(1, args.streams), 3),
            "rss_mb_peak_with_stops": round(peak_all / MB, 1),
            "workers_rss_mb_peak": round(peak_kids / MB, 1),
        },
        "client": {"cpu_percent_of_one_core": round(100 * (me1 - me0) / wall, 1),
                   "rss_mb_peak": round(peak_me / MB, 1)},
        "window_seconds": round(wall, 2),
    }


# ---------------------------------------------------------------------- stalls


@dataclass
class Probe:
    """Replies to ``nop`` probes sent every ``interval`` seconds: (sent, received) pairs."""

    interval: float
    replies: list[tuple[float, float]] = field(default_factory=list)

    def window(self, start: float, end: float) -> dict[str, Any]:
        """Largest gap between replies and largest round trip of probes sent in [start, end]."""
        inside = [(s, r) for s, r in self.replies if start <= s <= end]
        if not inside:
            return {"probes": 0, "max_gap_ms": None, "max_round_trip_ms": None,
                    "seconds": round(end - start, 3)}
        arrivals = [start] + [r for _, r in inside] + [max(end, inside[-1][1])]
        gap = max(b - a for a, b in zip(arrivals, arrivals[1:]))
        return {"probes": len(inside), "max_gap_ms": round(gap * 1000, 1),
                "max_round_trip_ms": round(max(r - s for s, r in inside) * 1000, 1),
                "p50_round_trip_ms": latency_summary([r - s for s, r in inside])["p50_ms"],
                "seconds": round(end - start, 3)}


async def run_probe(url: str, probe: Probe, done: asyncio.Event) -> None:
    """One WebSocket that sends a ``nop`` every ``probe.interval`` s and times the replies
    (one in flight at most: a frozen server shows as one long round trip).  A raw socket:
    ``nop`` is no action of the protocol client."""
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, heartbeat=None) as ws:
            while not done.is_set():
                sent = loop.time()
                await ws.send_str('{"action": "nop"}')
                msg = await ws.receive(timeout=120)
                probe.replies.append((sent, loop.time()))
                if msg.type != aiohttp.WSMsgType.TEXT:
                    raise RuntimeError(f"probe connection ended: {msg.type}")
                await asyncio.sleep(max(0.0, sent + probe.interval - loop.time()))


def upload_and_stop(base_url: str, session_id: str, seconds: float) -> dict[str, Any]:
    """In a process of its own (so that the probe's client side never waits for this one's
    GIL): record ``seconds`` of PCM as fast as possible, then ``stop``. ``marks`` holds the
    times (``time.monotonic``, the clock of asyncio's loop, shared by every process) of the
    upload's start, the ``stop`` and ``recording_stopped``."""
    marks: dict[str, float] = {}
    clock = time.monotonic
    chunk = bytes(np.random.default_rng(7).integers(-8192, 8192, 256 * 1024, dtype=np.int16)
                  .astype("<i2").tobytes())  # 512 KiB, 16 s of audio
    total = int(seconds * BYTES_PER_SECOND)

    def chunks() -> Iterator[bytes]:
        sent = 0
        while sent < total:
            data = chunk[:min(len(chunk), total - sent)]
            yield data
            sent += len(data)
        marks["stop"] = clock()  # the client sends `stop` as soon as the chunks run out

    def on_event(event: dict[str, Any]) -> None:
        if event.get("type") == "recording_started":
            marks["upload"] = clock()
        elif event.get("type") == "recording_stopped":
            marks["stopped"] = clock()

    async def go() -> dict[str, Any]:
        async with AsyncClient(base_url, timeout=900) as client:
            rec = await client.record(chunks(), session_id=session_id, input_format="pcm_s16le",
                                      options={"sample_rate": SAMPLE_RATE, "channels": 1},
                                      wait=False, on_event=on_event)
        stopped = rec.last("recording_stopped")
        if rec.errors or stopped is None:
            raise RuntimeError(f"upload refused: {rec.errors[:1] or rec.messages[-1:]}")
        return {"sent_mb": round(rec.bytes_sent / MB, 1),
                "duration_seconds": stopped["duration_seconds"], "marks": marks}

    return asyncio.run(go())


async def measure_stalls(args: argparse.Namespace, srv: LocalServer) -> dict[str, Any]:
    """The largest reply gaps of a probe stream during a first REST run and a long stop."""
    loop = asyncio.get_running_loop()
    out: dict[str, Any] = {"probe_ms": args.probe_ms}
    # A short recording to run on (its own run is renditions only: fast).
    async with AsyncClient(srv.url) as client:
        target = await client.record([next(chunk_source(0, BYTES_PER_SECOND))],
                                     input_format="pcm_s16le",
                                     options={"sample_rate": SAMPLE_RATE, "channels": 1})
    sid = target.session_id
    # Raw requests: the figures are the answers' statuses and error text, which the
    # protocol client turns into exceptions.
    async with aiohttp.ClientSession() as http:
        probe = Probe(args.probe_ms / 1000)
        done = asyncio.Event()
        prober = asyncio.create_task(run_probe(f"{srv.ws_url}/ws/stall-probe", probe, done))
        await asyncio.sleep(1.0)
        t = loop.time()
        await asyncio.sleep(1.0)
        out["idle"] = probe.window(t, loop.time())

        t = loop.time()
        async with http.post(f"{srv.url}/api/sessions/{sid}/runs",
                             json={"num_speakers": 2, "language": "en"}) as r:
            out["rest_run_status"] = r.status
        out["rest_run_seconds"] = round(loop.time() - t, 3)
        async with http.post(f"{srv.url}/api/sessions/{sid}/runs",
                             json={"num_speakers": "two"}) as r:
            out["bad_run_status"] = r.status
            out["bad_run_error"] = (await r.json()).get("error")
        await asyncio.sleep(0.5)
        out["rest_run"] = probe.window(t, loop.time())

        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            upload = await loop.run_in_executor(pool, upload_and_stop, srv.url,
                                                "new", args.stall_seconds)
        marks = upload.pop("marks")
        out["upload"] = {**upload, **probe.window(marks["upload"], marks["stop"])}
        out["stop"] = probe.window(marks["stop"], marks["stopped"])
        done.set()
        await prober
    windows = [out[k]["max_gap_ms"] for k in ("rest_run", "upload", "stop")]
    out["max_gap_ms"] = max((w for w in windows if w is not None), default=None)
    return out


def run_stalls(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    server_args = ["--pipeline", "renditions", "--max-duration",
                   str(max(3600, int(args.stall_seconds * 2))), "--log-level", "WARNING"]
    print(f"[load] stalls: probe every {args.probe_ms:g} ms during a first REST run and a "
          f"{args.stall_seconds:g} s upload + stop; server: {' '.join(server_args)}", flush=True)
    srv = LocalServer(data_dir / "stalls", args=server_args)
    try:
        srv.start()
        return asyncio.run(measure_stalls(args, srv))
    finally:
        srv.stop()


def _count(value: Any) -> str:
    return "?" if value is None else str(value)


def passed(results: dict[str, Any], streams: int) -> bool:
    """Whether a load run kept everything: no byte lost, no stream failed, and every
    stream whole on disk (raw part and audio.wav byte-exact)."""
    return (results.get("lost_bytes") == 0 and results.get("streams_failed") == 0
            and (results.get("streams_ok") or 0) >= streams)


def markdown_table(doc: dict[str, Any]) -> str:
    """The figures of a results file as a markdown table."""
    r, prm = doc["results"], doc["parameters"]
    rows: list[tuple[str, str]] = []
    if "server" in r:
        srv = r["server"]
        rows += [
        ("streams × seconds", f"{prm['streams']} × {prm['seconds']:g}"),
        ("sent / lost", f"{r['sent_mb']} MB / {r['lost_bytes']} bytes"),
        # a stream is whole when part-000.raw and audio.wav are both byte-exact and it
        # did not fail: raw alone hid a truncated audio.wav
        ("streams whole (no failure, both files byte-exact)",
         f"**{_count(r.get('streams_ok'))}/{prm['streams']}** (part-000.raw exact "
         f"{r['raw_exact']}/{prm['streams']}, audio.wav exact "
         f"{_count(r.get('wav_exact'))}/{prm['streams']})"),
        ("chunk → progress (p50 / p99 / max)",
         "{p50_ms} / {p99_ms} / {max_ms} ms".format(**r["progress_latency"])),
        ("nop round trip (p50 / p99)", "{p50_ms} / {p99_ms} ms".format(**r["nop_round_trip"])),
        ("server CPU (% of one core)", f"{srv['cpu_percent_of_one_core']}"),
        ("server RSS before → peak (per stream)",
         f"{srv['rss_mb_before']} → {srv['rss_mb_peak_streaming']} MB "
         f"({srv['rss_mb_per_stream']} MB)"),
        ]
    stalls = r.get("stalls")
    if stalls:
        def gap(w: dict[str, Any]) -> str:
            return f"{w['max_gap_ms']} / {w['max_round_trip_ms']} ms ({w['probes']} probes)"

        rows += [
            (f"probe every {stalls['probe_ms']:g} ms, idle: largest reply gap / round trip",
             gap(stalls["idle"])),
            ("… during the first REST run (`POST .../runs`)", gap(stalls["rest_run"])),
            (f"… during a {stalls['upload']['duration_seconds']:g} s PCM upload "
             f"({stalls['upload']['sent_mb']} MB)", gap(stalls["upload"])),
            ("… during its `stop` (decode) until `recording_stopped`"
             f" ({stalls['stop']['seconds']:g} s)", gap(stalls["stop"])),
        ]
    return (f"Machine: {machine_stamp(doc.get('machine') or {})}\n\n| figure | value |\n"
            "|---|---|\n" + "".join(f"| {a} | {b} |\n" for a, b in rows))


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks load", description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", type=int, default=200)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--chunk-ms", type=int, default=250)
    p.add_argument("--progress-every", type=int, default=20, help="server flag (chunks)")
    p.add_argument("--nop-every", type=float, default=5.0, help="seconds between nop probes")
    p.add_argument("--spread", type=float, default=None,
                   help="seconds over which stream start phases are spread "
                        "(default: progress-every x chunk-ms)")
    output_arguments(p, NAME)
    p.add_argument("--keep-data", action="store_true", help="keep the server's data directory")
    p.add_argument("--stalls", action=argparse.BooleanOptionalAction, default=True,
                   help="also measure reply gaps during a first REST run and a long stop")
    p.add_argument("--stalls-only", action="store_true",
                   help="only the reply-gap measurement (results: load-stalls.json)")
    p.add_argument("--stall-seconds", type=float, default=3600.0,
                   help="seconds of 16 kHz PCM uploaded before the measured stop")
    p.add_argument("--probe-ms", type=float, default=15.0, help="ms between probe messages")
    args = p.parse_args(list(argv) if argv is not None else None)
    if reprinted(args, markdown_table, NAME):
        return 0
    if args.spread is None:
        args.spread = args.progress_every * args.chunk_ms / 1000
    machine = machine_info()  # before the run: its date and load average are the start's
    argv = list(argv) if argv is not None else sys.argv[1:]
    if args.stalls_only and args.out == RESULTS_DIR / f"{NAME}.json":
        args.out = RESULTS_DIR / f"{NAME}-stalls.json"

    data_dir = Path(tempfile.mkdtemp(prefix="workbench-load-"))
    server_args = ["--pipeline", "renditions", "--progress-every", str(args.progress_every),
                   "--max-recordings", "0", "--max-connections-per-client", "0",
                   "--max-duration", str(max(3600, int(args.seconds * 2))), "--log-level",
                   "WARNING"]
    print(f"[load] {args.streams} live streams x {args.seconds:g} s of 16 kHz PCM in "
          f"{args.chunk_ms} ms chunks; server: {' '.join(server_args)}", flush=True)
    results: dict[str, Any] = {}
    try:
        if not args.stalls_only:
            srv = LocalServer(data_dir / "data", args=server_args)
            try:
                srv.start()
                results = asyncio.run(measure(args, srv))
            finally:
                srv.stop()
        if args.stalls or args.stalls_only:
            results["stalls"] = run_stalls(args, data_dir)
    finally:
        if not args.keep_data:
            shutil.rmtree(data_dir, ignore_errors=True)
    out = {"benchmark": NAME, "machine": machine,
           "command": ("python -m benchmarks load " + " ".join(argv)).strip(),
           "parameters": {**{k: (str(v) if isinstance(v, Path) else v)
                             for k, v in vars(args).items()}, "server_args": server_args},
           "results": results}
    write_results(args.out, out)
    r = results
    print(json.dumps(r, indent=2))
    print(markdown_table(out))
    if "stalls" in r:
        st = r["stalls"]
        print(f"[load] largest reply gap {st['max_gap_ms']} ms (first REST run "
              f"{st['rest_run']['max_gap_ms']} ms, upload {st['upload']['max_gap_ms']} ms, "
              f"stop {st['stop']['max_gap_ms']} ms; target <= 50 ms); bad run -> "
              f"{st['bad_run_status']}")
    if args.stalls_only:
        return 0
    print(f"[load] {r['streams_ok']}/{args.streams} streams whole, lost bytes "
          f"{r['lost_bytes']}; progress p50/p99 {r['progress_latency']['p50_ms']}/"
          f"{r['progress_latency']['p99_ms']} ms; nop p50/p99 {r['nop_round_trip']['p50_ms']}/"
          f"{r['nop_round_trip']['p99_ms']} ms; server CPU "
          f"{r['server']['cpu_percent_of_one_core']}% of a core, RSS "
          f"{r['server']['rss_mb_before']} -> {r['server']['rss_mb_peak_streaming']} MB "
          f"streaming ({r['server']['rss_mb_peak_with_stops']} MB with the stops); "
          f"written to {args.out}")
    return 0 if passed(r, args.streams) else 1


if __name__ == "__main__":
    sys.exit(main())
