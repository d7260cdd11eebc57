"""TI mmWave SDK 3.x demo CLI: the chirp configuration file and its push, line by line.

The out-of-box demo listens on the CLI UART (115200 baud 8N1). The host sends one command
a line; the device's CLI task (SDK 3.x ``utils/cli/src/cli.c``, ``CLI_task``) answers:

- it echoes what it reads (the TI UART driver's text mode with ``readEcho`` on: a
  received ``\\r`` is echoed ``\\r\\n``, a ``\\n`` as ``\\n``; either one ends the line, so
  a host sending ``\\r\\n`` gets an extra empty line and an extra prompt);
- a line starting with ``%`` gets ``Skipped``; an empty line gets nothing but the prompt;
- a known command runs its handler, which may print lines of its own (``Ignored: Sensor
  is already stopped``, ``Error: Invalid usage of the CLI command``, ...) and then
  ``Done`` (handler returned 0) or ``Error <n>`` (returned n < 0);
- an unknown command gets ``'<cmd>' is not recognized as a CLI command``;
- then the prompt ``mmwDemo:/>`` (no newline) before the next read.

Device output goes through the UART driver's text mode too, which writes ``\\n`` as
``\\n\\r`` (seen in captures as ``Done\\n\\rmmwDemo:/>``). :class:`CliReplyScanner`
therefore splits on any mix of CR and LF and removes prompts wherever they appear.

Sources: SDK 3.5 ``cli.c`` (``CLI_task``: prompt, ``%`` -> ``Skipped``, tokenising on
``" \\r\\n"``, ``Done`` / ``Error %d`` / ``'%s' is not recognized as a CLI command``),
``cli_mmwave.c`` (``CLI_MMWaveExtensionHandler`` prints ``Done`` / ``Error %d`` itself
and returns 0 for any command it knows), the demo's ``mmw_cli.c`` (``Ignored: ...``
lines followed by ``Done``) and public transcripts of IWR6843/AWR1843 sessions.

:func:`load_chirp_config` and :class:`CliReplyScanner` are pure; :func:`push_config`
talks to any port object with ``write``, ``read``, ``in_waiting``, ``flush`` and
``reset_input_buffer`` (pyserial's), without importing serial.

:func:`doppler_resolution_mps` reads the chirp profile's Doppler resolution from the
same commands (SDK 2.x frames carry Doppler bin indices, not m/s).
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from towerd.errors import DriverInitError, DriverTimeoutError

log = logging.getLogger(__name__)

PROMPT = "mmwDemo:/>"
"""Prompt of the SDK 3.x out-of-box demo (``cliCfg.cliPrompt``)."""
MAX_LINE_CHARS = 255
"""The CLI task reads at most 255 characters (a 256-byte buffer) per command."""
MAX_REPLY_CHARS = 16384
"""More than this without a verdict is not a CLI answer (e.g. the data port by mistake)."""

_ERROR_CODE = re.compile(r"^Error -?\d+$")
_NOT_RECOGNIZED = "is not recognized as a CLI command"


@dataclass(frozen=True)
class CfgLine:
    """One command of a .cfg file, with its 1-based line number in the file."""

    line_no: int
    text: str

    @property
    def command(self) -> str:
        return self.text.split()[0]


def parse_chirp_config(text: str) -> list[CfgLine]:
    """Commands of a .cfg text: ``%`` comments and blank lines dropped, whitespace trimmed.

    Accepts ``\\n`` and ``\\r\\n`` line ends. A line longer than the device's 255-character
    read buffer is refused (the device would split it into two commands)."""
    lines = []
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("%"):
            continue
        if len(stripped) > MAX_LINE_CHARS:
            raise ValueError(f"line {number}: {len(stripped)} characters, the device reads at most {MAX_LINE_CHARS}")
        if not stripped.isascii():
            raise ValueError(f"line {number}: not ASCII: {stripped!r}")
        lines.append(CfgLine(number, " ".join(stripped.split())))
    return lines


def load_chirp_config(path: str | Path) -> list[CfgLine]:
    """Read and parse a .cfg file; DriverInitError names the file and the problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="ascii", errors="strict")
    except (OSError, UnicodeDecodeError) as exc:
        raise DriverInitError(f"chirp configuration {path}: cannot read: {exc}") from exc
    try:
        lines = parse_chirp_config(text)
    except ValueError as exc:
        raise DriverInitError(f"chirp configuration {path}: {exc}") from exc
    if not lines:
        raise DriverInitError(f"chirp configuration {path}: no commands in the file")
    return lines


@dataclass
class CliVerdict:
    """How the device answered one command."""

    ok: bool
    status: str  # "done" | "skipped" | "error" | "not-recognized"
    lines: list[str]  # what the device said after the echo, prompts removed

    @property
    def answer(self) -> str:
        return " / ".join(self.lines)


@dataclass
class CliReplyScanner:
    """Accumulates the device's bytes after one command and says when it has answered.

    Pure: :meth:`feed` takes bytes as they arrive and returns a :class:`CliVerdict` once
    the answer is complete, else None. ``Done``/``Skipped`` end a success; ``Error <n>``
    or "not recognized" end a failure. A line ``Error: ...`` (a handler's explanation) is
    kept and the scanner waits for the ``Error <n>`` that follows it; if a prompt comes
    first, the explanation alone is the failure.
    """

    command: str
    remainder: str = ""
    """Text received after the verdict's line (usually the prompt), or the unfinished
    last piece while no verdict has been reached."""
    heard: list[str] = field(default_factory=list)
    """Lines the device said after the echo so far, prompts removed."""
    _received: int = 0
    _echo_seen: bool = False
    _explanation: bool = False

    def feed(self, data: bytes) -> CliVerdict | None:
        self._received += len(data)
        if self._received > MAX_REPLY_CHARS:
            return CliVerdict(False, "error", self.heard + [f"(more than {MAX_REPLY_CHARS} characters without Done)"])
        parts = re.split(r"[\r\n]", self.remainder + data.decode("latin-1"))
        self.remainder = parts.pop()  # the unfinished last piece (often a prompt)
        for i, part in enumerate(parts):
            verdict = self._line(part)
            if verdict is not None:
                self.remainder = "\n".join(parts[i + 1 :] + [self.remainder])
                return verdict
        if self._explanation and PROMPT in self.remainder:
            return CliVerdict(False, "error", self.heard)
        return None

    def _line(self, raw: str) -> CliVerdict | None:
        had_prompt = PROMPT in raw
        line = raw.replace(PROMPT, "").strip()
        if had_prompt and self._explanation:
            return CliVerdict(False, "error", self.heard)
        if not line:
            return None
        if not self._echo_seen and line == self.command:
            self._echo_seen = True
            return None
        self.heard.append(line)
        lines = list(self.heard)
        if line == "Done":
            return CliVerdict(True, "done", lines)
        if line == "Skipped":
            return CliVerdict(True, "skipped", lines)
        if _ERROR_CODE.match(line):
            return CliVerdict(False, "error", lines)
        if _NOT_RECOGNIZED in line:
            return CliVerdict(False, "not-recognized", lines)
        if line.startswith("Error"):
            self._explanation = True
        return None


class CliPort(Protocol):
    """What :func:`push_config` needs of a port (pyserial's Serial has all of it)."""

    in_waiting: int

    def write(self, data: bytes) -> int | None: ...

    def read(self, size: int = 1) -> bytes: ...

    def flush(self) -> None: ...

    def reset_input_buffer(self) -> None: ...


@dataclass
class PushResult:
    """What a successful push did: one (line, verdict) per command sent."""

    replies: list[tuple[CfgLine, CliVerdict]]
    seconds: float

    @property
    def ignored(self) -> list[tuple[CfgLine, str]]:
        """Commands the device accepted with an ``Ignored: ...`` remark."""
        return [(line, text) for line, v in self.replies for text in v.lines if text.startswith("Ignored:")]


def _read_some(port: CliPort) -> bytes:
    data = port.read(1)
    if data:
        waiting = port.in_waiting
        if waiting:
            data += port.read(waiting)
    return data


def push_config(
    port: CliPort,
    lines: list[CfgLine],
    *,
    source: str,
    timeout_s: float,
    monotonic: Callable[[], float] = time.monotonic,
) -> PushResult:
    """Send each command and wait for its verdict; stop at the first refusal.

    Before the first command a bare newline is sent and the answer discarded: it makes the
    CLI process (and reject) whatever half line another program or line noise left in its
    input, so the first real command starts on a clean line. Each command gets
    ``timeout_s`` for its verdict (the port's own read timeout paces the wait).

    Raises DriverInitError naming ``source``, the line number, the command and the
    device's answer when the device refuses a line, and DriverTimeoutError when it does
    not answer in time.
    """
    started = monotonic()
    port.reset_input_buffer()
    port.write(b"\n")
    port.flush()
    deadline = monotonic() + min(timeout_s, 0.5)
    pending = ""
    while monotonic() < deadline and PROMPT not in pending:
        pending += _read_some(port).decode("latin-1")
    port.reset_input_buffer()

    replies: list[tuple[CfgLine, CliVerdict]] = []
    for line in lines:
        scanner = CliReplyScanner(line.text)
        port.write(line.text.encode("ascii") + b"\n")
        port.flush()
        deadline = monotonic() + timeout_s
        verdict: CliVerdict | None = None
        while verdict is None:
            if monotonic() > deadline:
                heard = " / ".join(scanner.heard + [scanner.remainder.strip()]).strip(" /") or "nothing"
                raise DriverTimeoutError(
                    f"{source}:{line.line_no}: no answer to '{line.text}' within {timeout_s:g} s (heard: {heard}); "
                    "is cli_port the CLI UART (115200 baud), not the data port, and is nothing else using it "
                    "(ModemManager probes CDC-ACM ports)?"
                )
            data = _read_some(port)
            if data:
                verdict = scanner.feed(data)
        if not verdict.ok:
            raise DriverInitError(
                f"{source}:{line.line_no}: the radar refused '{line.text}': {verdict.answer}"
            )
        for text in verdict.lines[:-1]:
            log.info("%s:%d: %s: %s", source, line.line_no, line.command, text)
        replies.append((line, verdict))
        # Wait for the prompt: the CLI reads the next line only after printing it.
        prompt_deadline = monotonic() + min(timeout_s, 0.5)
        tail = scanner.remainder
        while PROMPT not in tail and monotonic() < prompt_deadline:
            tail += _read_some(port).decode("latin-1")
    return PushResult(replies, monotonic() - started)


SPEED_OF_LIGHT_MPS = 3e8
"""As TI's visualiser uses it (not 299792458): the same m/s per bin as TI's own tools."""


def doppler_resolution_mps(lines: list[CfgLine]) -> float:
    """Doppler resolution (m/s per bin) of a .cfg's frame, as TI's mmWave Demo Visualizer
    2.1 computes it (``app/input_validations.js``, in the public copy
    arghasen10/mmWave-Demo-Visualizer: ``dopplerResolutionMps = 3e8 / (2 * startFreq * 1e9 *
    (idleTime + rampEndTime) * 1e-6 * numChirpsPerFrame)``, with ``numChirpsPerFrame =
    (chirpEndIdx - chirpStartIdx + 1) * numLoops`` of ``frameCfg``)::

        profileCfg <id> <startFreq GHz> <idleTime us> <adcStartTime us> <rampEndTime us> ...
        frameCfg <chirpStartIdx> <chirpEndIdx> <numLoops> <numFrames> <periodicity ms> ...

    ValueError names what is missing: no ``profileCfg`` or ``frameCfg``, several
    profiles (an advanced-frame configuration, ``dfeDataOutputMode 3``, has one
    resolution per sub-frame) or values that give no positive finite resolution.
    """
    profiles = [line for line in lines if line.command == "profileCfg"]
    frames = [line for line in lines if line.command == "frameCfg"]
    modes = [line.text.split()[1:2] for line in lines if line.command == "dfeDataOutputMode"]
    if any(m != ["1"] for m in modes):
        raise ValueError("dfeDataOutputMode is not 1 (frame mode): the Doppler resolution differs per sub-frame")
    if len(profiles) != 1 or len(frames) != 1:
        raise ValueError(f"need exactly one profileCfg and one frameCfg, found {len(profiles)} and {len(frames)}")
    p, f = profiles[0].text.split(), frames[0].text.split()
    try:
        start_ghz, idle_us, ramp_end_us = float(p[2]), float(p[3]), float(p[5])
        first, last, loops = int(f[1]), int(f[2]), int(f[3])
    except (IndexError, ValueError) as exc:
        raise ValueError(f"line {profiles[0].line_no}/{frames[0].line_no}: cannot read profileCfg/frameCfg: "
                         f"{exc}") from None
    chirps = (last - first + 1) * loops
    denominator = 2.0 * start_ghz * 1e9 * (idle_us + ramp_end_us) * 1e-6 * chirps
    if not denominator > 0 or not math.isfinite(denominator):
        raise ValueError(f"line {profiles[0].line_no}/{frames[0].line_no}: profileCfg/frameCfg give no positive "
                         "Doppler resolution")
    return SPEED_OF_LIGHT_MPS / denominator
