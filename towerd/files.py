"""The files a configuration names, checked as the service user will open them.

``towerd check-config`` (unless ``--schema-only``), ``towerd doctor`` and ``towerd run``
all call :func:`check_files`, so their verdicts agree: ``run`` refuses (exit 78) before it
creates anything on disk, and the unit's ``ExecStartPre=towerd check-config`` names the
same problems first. Checked: each central's key files (present, readable by the
service user through every directory above them, a public key file holding a key, the
secret key file mode 0600 or stricter and well-formed), each sensor's device
configuration file (a TI radar's ``chirp_config``: present, readable, with commands),
and ``state_dir`` (a directory the service user can write, or can create).

Technicians run these commands as root, the daemon runs as ``towerd``: root can read a
``root:root 0600`` key the daemon cannot. So the checks are made for an :class:`Account`,
by default the service user when it exists and the caller is root, else the caller.
Permissions are judged from owner, group and mode bits as the kernel does for an
unprivileged user (ACLs are not read); for the calling user itself ``os.access`` decides.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from towerd.errors import ConfigError, DriverError

SERVICE_USER = "towerd"
"""The system user the package creates and the systemd unit runs the daemon as."""


@dataclass(frozen=True)
class Account:
    """Whose view of the file system the checks take."""

    name: str
    uid: int
    gids: frozenset[int]
    current: bool = False  # the calling process itself: os.access decides

    @classmethod
    def caller(cls) -> Account:
        uid = os.geteuid()
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            name = str(uid)
        return cls(name, uid, frozenset([os.getegid(), *os.getgroups()]), current=True)

    @classmethod
    def named(cls, name: str) -> Account:
        """The account ``name`` with its primary and supplementary groups; ConfigError
        when there is no such user."""
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            raise ConfigError(f"no user {name!r} on this machine") from None
        if pw.pw_uid == os.geteuid():
            return cls.caller()
        gids = {pw.pw_gid} | {g.gr_gid for g in grp.getgrall() if name in g.gr_mem}
        return cls(name, pw.pw_uid, frozenset(gids))


def service_account(name: str | None = None) -> Account:
    """``name`` if given; else the service user when the caller is root and the user
    exists (a technician checking for the daemon); else the caller."""
    if name:
        return Account.named(name)
    if os.geteuid() == 0:
        try:
            return Account.named(SERVICE_USER)
        except ConfigError:
            pass
    return Account.caller()


def allowed(account: Account, st: os.stat_result, want: int) -> bool:
    """Whether ``account`` gets ``want`` (a mix of os.R_OK/W_OK/X_OK) from the owner,
    group and mode bits in ``st``; root gets read and write, and execute where anyone has it."""
    mode = st.st_mode
    if account.uid == 0:
        return not want & os.X_OK or bool(mode & 0o111) or stat.S_ISDIR(mode)
    if st.st_uid == account.uid:
        bits = (mode >> 6) & 7
    elif st.st_gid in account.gids:
        bits = (mode >> 3) & 7
    else:
        bits = mode & 7
    return bits & want == want


def access_problem(account: Account, path: str | os.PathLike, want: int) -> str | None:
    """Why ``account`` cannot use ``path`` with ``want``, or None when it can: the first
    directory above it that it cannot enter, or the file's own owner and mode."""
    p = Path(os.path.abspath(path))
    if account.current and os.access(p, want):
        return None
    for parent in reversed(p.parents):
        try:
            st = os.stat(parent)
        except OSError as exc:
            return f"{parent}: {exc.strerror}"
        if not allowed(account, st, os.X_OK):
            return (f"user {account.name} cannot enter {parent} ({stat.filemode(st.st_mode)} "
                    f"{_owner(st)})")
    try:
        st = os.stat(p)
    except OSError as exc:
        return exc.strerror or str(exc)
    verb = "write" if want & os.W_OK else "read"
    if not allowed(account, st, want) or account.current:  # the caller: os.access said no (an ACL?)
        return f"user {account.name} cannot {verb} it ({stat.filemode(st.st_mode)} {_owner(st)})"
    return None


def _owner(st: os.stat_result) -> str:
    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"{user}:{group}"


@dataclass(frozen=True)
class FileProblem:
    """A named file the daemon could not use: the configuration key and why."""

    key: str  # dotted path in the configuration, e.g. centrals[0].client_secret_key_file
    message: str
    fix: str

    def format(self, config_path: str, marks: dict[str, tuple[int, int]] | None = None) -> str:
        line, col = (marks or {}).get(self.key, (1, 1))
        return f"{config_path}:{line}:{col}: {self.key}: {self.message} (fix: {self.fix})"


def check_files(config: Any, account: Account) -> list[FileProblem]:
    """Every problem with the files ``config`` names, as ``account`` would meet them."""
    from towerd.keys import check_secret_key_file, load_public_key_file

    problems: list[FileProblem] = []

    def readable(key: str, path: str, what: str, missing_fix: str) -> bool:
        if not os.path.lexists(path):
            problems.append(FileProblem(key, f"{what} {path} does not exist", missing_fix))
            return False
        why = access_problem(account, path, os.R_OK)
        if why:
            fix = (f"chown {account.name} {path}" if "cannot read" in why
                   else f"let user {account.name} enter the directories above it (chgrp {account.name} and "
                        "chmod g+x, as the package does for /etc/towerd/keys)")
            problems.append(FileProblem(key, f"{what} {path}: {why}", fix))
            return False
        return True

    for i, central in enumerate(config.centrals):
        if central.plain:
            continue
        key = f"centrals[{i}].server_public_key_file"
        path = central.server_public_key_file
        central_key_fix = "get the central's public key file from its operators and put it there"
        if not path:
            problems.append(FileProblem(key, "CURVE needs the central's public key file", central_key_fix))
        elif readable(key, path, "the central's public key file", central_key_fix):
            try:
                load_public_key_file(path, "the central's public key file")
            except ConfigError as exc:
                problems.append(FileProblem(key, str(exc), central_key_fix))
        key = f"centrals[{i}].client_secret_key_file"
        path = central.client_secret_key_file
        where = os.path.dirname(path) if path else "/etc/towerd/keys"
        generate = f"towerd keys generate --dir {where}, which makes it readable by the service user only"
        if not path:
            problems.append(FileProblem(key, "CURVE needs this tower's secret key file", generate))
        elif readable(key, path, "this tower's secret key file", generate):
            try:
                check_secret_key_file(path)
            except ConfigError as exc:
                mode_problem = "mode" in str(exc)
                fix = (f"chmod 600 {path}; if others could read it, make a new key pair: {generate}"
                       if mode_problem else generate)
                problems.append(FileProblem(key, str(exc), fix))
    for i, sensor in enumerate(config.sensors):
        chirp = getattr(sensor.settings, "chirp_config", None)
        if sensor.enabled and chirp:
            key = f"sensors[{i}].settings.chirp_config"
            fix = "the package installs /etc/towerd/ti_mmwave/iwr6843_demo.cfg; or fix the path"
            if readable(key, chirp, "chirp configuration", fix):
                from towerd.drivers.ti_mmwave.cli import load_chirp_config

                try:
                    load_chirp_config(chirp)
                except DriverError as exc:
                    problems.append(FileProblem(key, str(exc), "use a chirp configuration from TI's mmWave SDK "
                                                               "demo (lines of CLI commands)"))
    problems.extend(_state_dir_problems(config.state_dir, account))
    return problems


def _state_dir_problems(state_dir: str, account: Account) -> list[FileProblem]:
    path = Path(state_dir)
    create = f"install -d -o {account.name} -m 0750 {path}; the package creates /var/lib/towerd"
    if path.exists():
        if not path.is_dir():
            return [FileProblem("state_dir", f"{path} is not a directory", "point state_dir at a directory")]
        why = access_problem(account, path, os.W_OK | os.X_OK)
        if why:
            return [FileProblem("state_dir", f"{path}: {why}; the outbox lives there", f"chown {account.name} {path}")]
        return []
    parent = next((p for p in path.parents if p.exists()), Path("/"))
    why = access_problem(account, parent, os.W_OK | os.X_OK)
    if why:
        return [FileProblem("state_dir", f"{path} does not exist and user {account.name} cannot create it in "
                                         f"{parent}: {why}", create)]
    return []


def key_marks(path: str) -> dict[str, tuple[int, int]]:
    """Line and column of each dotted key (``centrals[0].client_secret_key_file``) in the
    YAML file at ``path``, to point at the value; {} when the file cannot be parsed."""
    import yaml

    try:
        root = yaml.compose(Path(path).read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    marks: dict[str, tuple[int, int]] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                name = f"{prefix}.{k.value}" if prefix else str(k.value)
                marks[name] = (v.start_mark.line + 1, v.start_mark.column + 1)
                walk(v, name)
        elif isinstance(node, yaml.SequenceNode):
            for j, item in enumerate(node.value):
                walk(item, f"{prefix}[{j}]")

    if root is not None:
        walk(root, "")
    return marks
