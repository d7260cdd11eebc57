"""Settings of one central as the tower's uplink reaches it (one entry of
``centrals:``).

Pure: no ZeroMQ import, so that the configuration and check-config can load it
without the uplink's I/O."""

from __future__ import annotations

from dataclasses import dataclass

from towerd.icd import MAX_COUNT
from towerd.schema import spec
from towerd.uplink.sharing import SharingRule

CENTRAL_NAME_PATTERN = r"[a-z0-9][a-z0-9_-]{0,31}"


@dataclass(frozen=True)
class CentralSettings:
    """How to reach one central and what it may receive (one entry of ``centrals:``)."""

    name: str = spec(doc="name in logs, status and the outbox's acknowledgement state",
                     pattern=CENTRAL_NAME_PATTERN)
    endpoint: str = spec(doc="the central's ROUTER endpoint, e.g. tcp://central.example.net:7700")
    extra_endpoints: tuple[str, ...] = spec((), doc="further endpoints of the same central (its other processes, "
                                           "sharing one store): the tower connects to all and sends to those up, "
                                           "so one going down fails over to the others")
    plain: bool = spec(False, doc="true: no CURVE encryption/authentication (lab and demo only; the central "
                       "must run with --plain too)")
    server_public_key_file: str | None = spec(None, doc="the central's public key file (CURVE)")
    client_secret_key_file: str | None = spec(None, doc="this tower's secret key file, mode 0600 (CURVE)")
    ack_timeout_s: float = spec(5.0, doc="resend what the central has not acknowledged after this long; the "
                                "first and the shortest timeout: it grows with the measured ACK round trip "
                                "(srtt + 4 rttvar) and doubles after each resend", unit="s", lo=0.05, hi=600.0)
    ack_timeout_max_s: float = spec(60.0, doc="longest ACK timeout, however slow the ACKs", unit="s",
                                    lo=0.05, hi=3600.0)
    window: int = spec(64, doc="messages in flight (sent, not yet acknowledged)", lo=1, hi=10_000)
    batch_records: int = spec(100, doc="records per TRACKS/EVENTS message at most", lo=1, hi=MAX_COUNT)
    heartbeat_ivl_s: float = spec(1.0, doc="ZMTP heartbeat period", unit="s", lo=0.05, hi=600.0)
    heartbeat_timeout_s: float = spec(3.0, doc="a silent link is declared dead after this long", unit="s",
                                      lo=0.1, hi=3600.0)
    reconnect_ivl_s: float = spec(1.0, doc="first reconnect delay (doubles after a refusal)", unit="s",
                                  lo=0.01, hi=600.0)
    reconnect_ivl_max_s: float = spec(30.0, doc="longest reconnect delay", unit="s", lo=0.01, hi=3600.0)
    health_interval_s: float = spec(10.0, doc="HEALTH period (also sent at every connect)", unit="s",
                                    lo=0.1, hi=3600.0)
    replay_rate_rps: float = spec(3000.0, doc="backlog records sent per second at most after an outage "
                                  "(live reports go first)", unit="records/s", lo=1.0, hi=1_000_000.0)
    replay_window: int = spec(8, doc="backlog messages in flight at most; keep it below window so that live "
                              "reports always have room", lo=1, hi=10_000)
    share: SharingRule = spec(SharingRule(), doc="what this central may receive (default: everything, exact)")

    def __post_init__(self) -> None:
        problems = []
        if not self.name:
            problems.append("central name is empty")
        if not self.endpoint:
            problems.append(f"central {self.name!r}: endpoint is empty")
        if any(not e for e in self.extra_endpoints) or len({self.endpoint, *self.extra_endpoints}) != \
                1 + len(self.extra_endpoints):
            problems.append(f"central {self.name!r}: extra_endpoints must be non-empty and all different")
        if not 1 <= self.window <= 10_000:
            problems.append(f"central {self.name!r}: window {self.window} not in 1..10000")
        if not 1 <= self.batch_records <= MAX_COUNT:
            problems.append(f"central {self.name!r}: batch_records {self.batch_records} not in 1..{MAX_COUNT}")
        if not 1 <= self.replay_window <= self.window:
            problems.append(f"central {self.name!r}: replay_window {self.replay_window} not in 1..window "
                            f"({self.window})")
        if self.ack_timeout_max_s < self.ack_timeout_s:
            problems.append(f"central {self.name!r}: ack_timeout_max_s < ack_timeout_s")
        for field in ("ack_timeout_s", "ack_timeout_max_s", "heartbeat_ivl_s", "heartbeat_timeout_s", "reconnect_ivl_s",
                      "reconnect_ivl_max_s", "health_interval_s", "replay_rate_rps"):
            if not getattr(self, field) > 0:
                problems.append(f"central {self.name!r}: {field} must be > 0")
        if self.reconnect_ivl_max_s < self.reconnect_ivl_s:
            problems.append(f"central {self.name!r}: reconnect_ivl_max_s < reconnect_ivl_s")
        if not self.plain and not (self.server_public_key_file and self.client_secret_key_file):
            problems.append(
                f"central {self.name!r}: CURVE needs server_public_key_file and client_secret_key_file "
                "(or plain: true for a lab link)"
            )
        if problems:
            raise ValueError("; ".join(problems))

