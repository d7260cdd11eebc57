"""``web:``: the read-only live console the daemon serves (see :mod:`towerd.web`)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from towerd.schema import spec

TILE_URL_PATTERN = re.compile(r"https?://[^\s\"'<>]+")


@dataclass(frozen=True)
class TileSettings:
    """Optional background map tiles (Web Mercator z/x/y, as OpenStreetMap serves them).
    Either a URL template the technician's browser fetches, or a local folder the daemon
    serves; neither: no background (the picture needs none)."""

    url: str | None = spec(None, doc="tile URL template with {z} {x} {y}, fetched by the browser, not the daemon")
    folder: str | None = spec(None, doc="local folder of tiles laid out as Z/X/Y.png, served by the daemon")
    zoom: int = spec(16, doc="tile zoom level drawn", lo=1, hi=20)
    attribution: str = spec("", doc="credit line drawn under the picture (tile licences ask for one)")

    def __post_init__(self) -> None:
        if self.url is not None and self.folder is not None:
            raise ValueError("give tiles.url or tiles.folder, not both")
        if self.url is not None:
            if not TILE_URL_PATTERN.fullmatch(self.url):
                raise ValueError(f"tiles.url {self.url!r} is not an http(s) URL")
            missing = [k for k in ("{z}", "{x}", "{y}") if k not in self.url]
            if missing:
                raise ValueError(f"tiles.url lacks {', '.join(missing)}")


@dataclass(frozen=True)
class WebSettings:
    """The console: where it listens, who may read it, how often it updates."""

    enabled: bool = spec(True, doc="serve the console")
    bind: str = spec("127.0.0.1", doc="address to listen on; anything but loopback needs token_file")
    port: int = spec(8470, doc="TCP port; 0: any free port (the log and status say which)", lo=0, hi=65535)
    token_file: str | None = spec(
        None, doc="file holding the access token (16+ characters); requests from other hosts must carry it")
    rate_hz: float = spec(4.0, doc="updates per second pushed to an open console", unit="Hz", lo=0.2, hi=10.0)
    max_clients: int = spec(8, doc="open consoles (push streams) at once; more are refused", lo=1, hi=64)
    trail_s: float = spec(30.0, doc="length of the trail drawn behind each track", unit="s", lo=0.0, hi=600.0)
    plots_s: float = spec(3.0, doc="raw radar plots stay on the picture this long, fading", unit="s", lo=0.0,
                          hi=60.0)
    waterfall_rows: int = spec(120, doc="sweeps kept per band for the RF waterfall", lo=10, hi=1000)
    radar_fov_deg: float = spec(120.0, doc="azimuth field of view drawn around each radar's boresight", unit="deg",
                                lo=1.0, hi=360.0)
    radar_range_m: float = spec(200.0, doc="range drawn for each radar's field of view", unit="m", lo=1.0,
                                hi=100000.0)
    tiles: TileSettings = spec(TileSettings(), doc="optional map background")

    def __post_init__(self) -> None:
        try:
            address = ipaddress.ip_address(self.bind)
        except ValueError:
            raise ValueError(f"bind {self.bind!r} is not an IP address (e.g. 127.0.0.1, 192.0.2.10, ::1)") from None
        if not address.is_loopback and self.token_file is None:
            raise ValueError(f"bind {self.bind} lets other hosts connect: set token_file (the console is "
                             f"otherwise only for this computer)")

    @property
    def loopback_only(self) -> bool:
        return ipaddress.ip_address(self.bind).is_loopback
