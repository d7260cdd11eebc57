"""The CLI of the TI mmWave SDK 3.x out-of-box demo, as the device runs it (emulated).

:class:`TiDemoCli` is pure: :meth:`TiDemoCli.receive` takes the bytes a host writes to
the CLI UART and returns the bytes the device writes back, keeping the device's state
(configuration since the last ``flushCfg``, sensor started or stopped). The emulator
(:mod:`towerd.sim.ti_mmwave`) moves the bytes between it and a pty and starts or stops
its data stream when :attr:`TiDemoCli.started` changes.

Behaviour reproduced from the SDK 3.5 sources (``utils/cli/src/cli.c``,
``utils/cli/src/cli_mmwave.c``, ``demo/xwr68xx/mmw/mss/mmw_cli.c``), written here
independently of the host side in ``towerd.drivers.ti_mmwave.cli``:

- the UART runs in TI's text mode with echo: each received character is echoed, a
  received CR is echoed CR LF, and CR or LF ends the command (so CR LF from a host gives
  one command and one empty line); every LF the device writes goes out as LF CR; a
  command is at most 255 characters (longer input is cut into several commands);
- the prompt ``mmwDemo:/>`` is written before each read; a banner when the CLI starts;
- ``%...`` -> ``Skipped``; an empty line -> nothing but the prompt;
- tokens are split on space, CR and LF only (``strtok`` with ``" \\r\\n"``);
- a known command with the wrong number of arguments -> ``Error: Invalid usage of the
  CLI command`` then ``Error -1``; success -> ``Done``;
- an unknown command -> ``'<cmd>' is not recognized as a CLI command``;
- ``sensorStop`` when not started -> ``Ignored: Sensor is already stopped`` then ``Done``;
  ``sensorStart`` when started -> ``Ignored: Sensor is already started`` then ``Done``;
- ``sensorStart`` without the essential commands since ``flushCfg`` -> ``Error: Full
  configuration must be provided before sensor can be started the first time`` (never
  started) or the demo's "partial configuration" message (started before), then
  ``Error -1``; ``sensorStart 0`` restarts with the configuration already applied;
- commands that only take effect at the first start, given while started ->
  ``Ignored: This command is not allowed after sensor has started`` then ``Done``.
Argument values are not range-checked (the firmware reads them with ``atoi``/``atof``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

PROMPT = b"mmwDemo:/>"
BANNER = (
    "******************************************\n"
    "xWR68xx MMW Demo 03.05.00.04\n"
    "******************************************\n"
)
MAX_COMMAND_CHARS = 255

ARGC: dict[str, tuple[int, ...]] = {
    # cli_mmwave.c (mmWave extension)
    "flushCfg": (), "dfeDataOutputMode": (2,), "channelCfg": (4,), "adcCfg": (3,), "profileCfg": (15,),
    "chirpCfg": (9,), "frameCfg": (8,), "advFrameCfg": (6,), "subFrameCfg": (11,), "lowPower": (3,),
    "contModeCfg": (10,), "bpmCfgAdvanced": (4,), "version": (),
    # mmw_cli.c (xwr68xx demo)
    "sensorStart": (1, 2), "sensorStop": (1,), "guiMonitor": (8,), "cfarCfg": (10,), "multiObjBeamForming": (4,),
    "calibDcRangeSig": (6,), "clutterRemoval": (3,), "adcbufCfg": (6,), "compRangeBiasAndRxChanPhase": (26,),
    "measureRangeBiasAndRxChanPhase": (4,), "aoaFovCfg": (6,), "cfarFovCfg": (5,), "extendedMaxVelocity": (3,),
    "CQRxSatMonitor": (6,), "CQSigImgMonitor": (4,), "analogMonitor": (3,), "lvdsStreamCfg": (5,),
    "configDataPort": (3,), "queryDemoStatus": (1,), "calibData": (4,), "bpmCfg": (5,), "help": (),
}
"""Commands the emulated demo knows and their allowed argc (command included); an empty
tuple: any count."""

REQUIRED_FOR_START = ("dfeDataOutputMode", "channelCfg", "adcCfg", "profileCfg", "chirpCfg", "frameCfg",
                      "guiMonitor", "cfarCfg")
"""Commands that must have been given since ``flushCfg`` for a full ``sensorStart``."""

FIRST_START_ONLY = frozenset({"adcbufCfg", "CQRxSatMonitor", "CQSigImgMonitor", "analogMonitor", "lvdsStreamCfg",
                              "calibData"})

FULL_CONFIG_NEEDED = "Error: Full configuration must be provided before sensor can be started the first time"
PARTIAL_CONFIG = (
    "Error: You have provided partial configuration between stop and this command and partial configuration "
    'cannot be undone.Issue the full configuration and do "sensorStart" '
)


@dataclass
class AppliedConfig:
    """What the running sensor was started with (what the emulator's stream follows)."""

    frame_period_ms: float | None = None  # frameCfg framePeriodicity
    num_frames: int = 0  # frameCfg numFrames, 0 = for ever
    detected_objects: int = 1  # guiMonitor detectedObjects (0, 1 = points + side info, 2 = points only)
    range_profile: bool = False  # guiMonitor logMagRange -> TLV 2
    noise_profile: bool = False  # guiMonitor noiseProfile -> TLV 3
    stats: bool = False  # guiMonitor statsInfo -> TLV 6
    range_bins: int = 256  # numAdcSamples rounded up to a power of two
    range_resolution_m: float = 0.044
    doppler_resolution_mps: float = 0.125  # what one Doppler bin is (SDK 2.x frames send bin indices)


@dataclass
class TiDemoCli:
    """The demo's CLI state machine; see the module docstring."""

    started: bool = False
    ever_started: bool = False
    applied: AppliedConfig | None = None
    """Configuration of the last successful full sensorStart (None before)."""
    commands: list[str] = field(default_factory=list)
    """Every command line processed, in order (for tests and the sim's log)."""
    starts: int = 0
    stops: int = 0
    _line: bytearray = field(default_factory=bytearray)
    _config: dict[str, list[list[str]]] = field(default_factory=dict)

    def boot(self) -> bytes:
        """What the device prints when its CLI task starts: banner and first prompt."""
        return self._out(BANNER) + PROMPT

    def receive(self, data: bytes) -> bytes:
        """Process bytes from the host; return the device's output (echo included)."""
        out = bytearray()
        for byte in data:
            if byte == 0x0D:
                out += b"\r\n"
                out += self._command()
            elif byte == 0x0A:
                out += b"\n"
                out += self._command()
            else:
                out.append(byte)
                self._line.append(byte)
                if len(self._line) >= MAX_COMMAND_CHARS:
                    out += self._command()
        return bytes(out)

    @staticmethod
    def _out(text: str) -> bytes:
        return text.replace("\n", "\n\r").encode("latin-1")

    def _command(self) -> bytes:
        line = self._line.decode("latin-1")
        self._line.clear()
        if line.startswith("%"):
            return self._out("Skipped\n") + PROMPT
        argv = [t for t in re.split(r"[ \r\n]+", line) if t]
        if not argv:
            return PROMPT
        self.commands.append(" ".join(argv))
        name = argv[0]
        if name not in ARGC:
            return self._out(f"'{name}' is not recognized as a CLI command\n") + PROMPT
        allowed = ARGC[name]
        if allowed and len(argv) not in allowed:
            return self._out("Error: Invalid usage of the CLI command\nError -1\n") + PROMPT
        status, lines = self._run(name, argv)
        text = "".join(f"{line}\n" for line in lines) + ("Done\n" if status == 0 else f"Error {status}\n")
        return self._out(text) + PROMPT

    def _run(self, name: str, argv: list[str]) -> tuple[int, list[str]]:
        if name == "sensorStart":
            return self._start(argv)
        if name == "sensorStop":
            if not self.started:
                return 0, ["Ignored: Sensor is already stopped"]
            self.started = False
            self.stops += 1
            return 0, []
        if name == "flushCfg":
            self._config.clear()
            return 0, []
        if name == "queryDemoStatus":
            return 0, [f"Sensor State: {2 if self.started else 0}"]
        if name == "version":
            return 0, ["Platform                : xWR68xx", "mmWave SDK Version      : 03.05.00.04"]
        if self.started and name in FIRST_START_ONLY:
            return 0, ["Ignored: This command is not allowed after sensor has started"]
        self._config.setdefault(name, []).append(argv[1:])
        return 0, []

    def _start(self, argv: list[str]) -> tuple[int, list[str]]:
        if self.started:
            return 0, ["Ignored: Sensor is already started"]
        reconfig = len(argv) == 1 or argv[1] != "0"
        if not reconfig:
            if self.applied is None:
                return -1, [FULL_CONFIG_NEEDED]
        else:
            missing = [c for c in REQUIRED_FOR_START if c not in self._config]
            if missing:
                return -1, [PARTIAL_CONFIG if self.ever_started else FULL_CONFIG_NEEDED]
            self.applied = self._applied()
        self.started = self.ever_started = True
        self.starts += 1
        return 0, []

    def _applied(self) -> AppliedConfig:
        cfg = AppliedConfig()
        frame = self._config["frameCfg"][-1]  # chirpStart chirpEnd numLoops numFrames periodicity trigger delay
        cfg.frame_period_ms = _atof(frame[4])
        cfg.num_frames = max(0, _atoi(frame[3]))
        gui = self._config["guiMonitor"][-1]  # subFrame detectedObjects logMagRange noiseProfile az rd stats
        cfg.detected_objects = _atoi(gui[1]) if _atoi(gui[1]) in (0, 1, 2) else 0
        cfg.range_profile = _atoi(gui[2]) == 1
        cfg.noise_profile = _atoi(gui[3]) == 1
        cfg.stats = _atoi(gui[6]) == 1
        profile = self._config["profileCfg"][-1]
        samples = max(1, _atoi(profile[9]))
        cfg.range_bins = 1 << (samples - 1).bit_length()
        slope_hz_per_s = _atof(profile[7]) * 1e12
        rate_sps = _atof(profile[10]) * 1e3
        if slope_hz_per_s > 0 and rate_sps > 0:
            cfg.range_resolution_m = 299792458.0 * rate_sps / (2.0 * slope_hz_per_s * cfg.range_bins)
        # Chirp repetition (idle + ramp end) times the frame's chirps, at the start frequency.
        chirps = (_atoi(frame[1]) - _atoi(frame[0]) + 1) * _atoi(frame[2])
        dwell_s = (_atof(profile[2]) + _atof(profile[4])) * 1e-6 * chirps
        if _atof(profile[1]) > 0 and dwell_s > 0:
            cfg.doppler_resolution_mps = 3e8 / (2.0 * _atof(profile[1]) * 1e9 * dwell_s)
        return cfg


def _atoi(text: str) -> int:
    """C ``atoi``: leading integer, 0 when there is none."""
    m = re.match(r"\s*([+-]?\d+)", text)
    return int(m.group(1)) if m else 0


def _atof(text: str) -> float:
    """C ``atof``: leading decimal number, 0.0 when there is none."""
    m = re.match(r"\s*([+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?)", text)
    return float(m.group(1)) if m else 0.0
