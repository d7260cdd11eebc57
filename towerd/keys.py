"""CURVE key files: generation, the checks made before a secret key is used, and the
central's allow-list of tower public keys (``towerd keys ...``).

File format: ZeroMQ certificate files as pyzmq's ``zmq.auth`` reads and writes them (a
``curve`` section with ``public-key = "<z85>"`` and, in the secret file only,
``secret-key = "<z85>"``); any tool that makes zmq certificates can make them.

- ``<name>.key``: the public key (mode 0644). A tower's goes to the central's
  allow-list; the central's goes to every tower.
- ``<name>.key_secret``: public and secret key, mode 0600, never leaves the machine.
  It is created with mode 0600 from the first byte (``O_CREAT|O_EXCL``), never chmod'ed
  afterwards, so it is not readable by others even for an instant.
- The central's allow-list is a directory of public certificates named
  ``<tower-id>.key``: the file name binds the key to exactly one tower id (ICD
  "Transport"). A key that appears under two tower ids is refused for both; names that
  are not tower ids are ignored with a message. ``towerd keys allow`` writes such files.

Why the checks: a secret key readable by group
or others is as good as published, and a CURVE configuration whose key file is missing
must stop the daemon with the file's name, not fall back to anything.
"""

from __future__ import annotations

import argparse
import logging
import os
import pwd
import stat
import struct
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from towerd.errors import ConfigError
from towerd.icd import TOWER_ID_RE

log = logging.getLogger(__name__)

PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"
Z85_KEY_LENGTH = 40
"""A 32-byte Curve25519 key in Z85 text."""

_SECRET_BANNER = (
    "#   ****  Generated on {when} by towerd keys generate  ****\n"
    "#   ZeroMQ CURVE **Secret** Certificate\n"
    "#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.\n\n"
)
_PUBLIC_BANNER = (
    "#   ****  Generated on {when} by towerd keys  ****\n"
    "#   ZeroMQ CURVE Public Certificate\n\n"
)


@dataclass(frozen=True)
class KeyPair:
    """Where a generated key pair was written, and its public key (Z85 text)."""

    public_file: Path
    secret_file: Path
    public_key: str


# ------------------------------------------------------------------------------ reading


def _parse_certificate(text: bytes) -> tuple[bytes | None, bytes | None]:
    """(public, secret) Z85 keys of a zmq certificate; None for what it lacks. The same
    parsing rules as ``zmq.auth.load_certificate`` (comments skipped, quotes stripped)."""
    public = secret = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith(b"#"):
            continue
        if line.startswith(b"public-key") and b"=" in line:
            public = line.split(b"=", 1)[1].strip(b" \t'\"")
        elif line.startswith(b"secret-key") and b"=" in line:
            secret = line.split(b"=", 1)[1].strip(b" \t'\"")
    return public, secret


def _valid_z85_key(key: bytes) -> bool:
    if len(key) != Z85_KEY_LENGTH:
        return False
    from zmq.utils import z85  # here: checking a configuration's schema must not load libzmq

    try:
        return len(z85.decode(key)) == 32
    except (ValueError, KeyError, IndexError, struct.error):
        return False


def check_secret_key_file(path: str | os.PathLike | None) -> None:
    """Refuse a secret key file that the daemon must not use, naming the file and why:
    none configured, missing, not a regular file, any permission bit for group or others
    (it must be 0600 or stricter), unreadable, or without a well-formed secret key.
    Raises :class:`~towerd.errors.ConfigError` (``towerd run`` exits 78)."""
    if not path:
        raise ConfigError("CURVE is configured but no secret key file is given")
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise ConfigError(
            f"secret key file {p}: missing (make one with `towerd keys generate --dir {p.parent}`)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"secret key file {p}: cannot inspect: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"secret key file {p}: not a regular file")
    try:
        text = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"secret key file {p}: cannot read: {exc.strerror or exc}") from exc
    public, secret = _parse_certificate(text)
    if not secret:
        raise ConfigError(f"secret key file {p}: holds no secret key (is it the public {PUBLIC_SUFFIX} file?)")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        who = " and ".join(w for w, bits in (("group", 0o070), ("others", 0o007)) if mode & bits)
        raise ConfigError(
            f"secret key file {p}: mode {mode:04o} gives {who} access to the secret key; "
            f"it must be 0600 (chmod 600 {p}), and if others could read it, generate a new key pair"
        )
    if not _valid_z85_key(secret) or not public or not _valid_z85_key(public):
        raise ConfigError(f"secret key file {p}: the keys are not 40-character Z85 CURVE keys")
    import zmq

    try:
        derived = zmq.curve_public(secret)
    except zmq.ZMQError as exc:
        raise ConfigError(f"secret key file {p}: libzmq cannot use the secret key: {exc}") from exc
    if derived != public:
        raise ConfigError(f"secret key file {p}: its public key does not belong to its secret key")


def load_secret_key_file(path: str | os.PathLike | None) -> tuple[bytes, bytes]:
    """``(public, secret)`` Z85 keys of a secret certificate, after
    :func:`check_secret_key_file`."""
    check_secret_key_file(path)
    public, secret = _parse_certificate(Path(path).read_bytes())  # type: ignore[arg-type]
    assert public and secret
    return public, secret


def load_public_key_file(path: str | os.PathLike | None, what: str = "public key file") -> bytes:
    """The Z85 public key of a certificate file; ConfigError naming the file otherwise."""
    if not path:
        raise ConfigError(f"no {what} is given")
    p = Path(path)
    try:
        text = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} {p}: missing") from None
    except OSError as exc:
        raise ConfigError(f"{what} {p}: cannot read: {exc.strerror or exc}") from exc
    public, _ = _parse_certificate(text)
    if not public:
        raise ConfigError(f"{what} {p}: holds no public key")
    if not _valid_z85_key(public):
        raise ConfigError(f"{what} {p}: the public key is not a 40-character Z85 CURVE key")
    return public


# ------------------------------------------------------------------------------ writing


def _write_new(path: Path, data: bytes, mode: int, force: bool, owner: tuple[int, int] | None = None) -> None:
    """Write ``data`` to ``path`` created with ``mode`` from the start (and ``owner``
    (uid, gid) before the first byte); atomic (temporary file + link/rename), never
    replacing an existing file unless ``force``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        if owner is not None:
            os.fchown(fd, *owner)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if force:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails with FileExistsError instead of clobbering
            os.unlink(tmp)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _certificate(banner: str, public: bytes, secret: bytes | None = None,
                 metadata: Mapping[str, str] | None = None) -> bytes:
    lines = [banner.format(when=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")), "metadata\n"]
    for key, value in (metadata or {}).items():
        lines.append(f"    {key} = \"{value}\"\n")
    lines.append("curve\n")
    lines.append(f"    public-key = \"{public.decode('ascii')}\"\n")
    if secret is not None:
        lines.append(f"    secret-key = \"{secret.decode('ascii')}\"\n")
    return "".join(lines).encode("ascii")


def generate_keypair(directory: str | os.PathLike, name: str = "tower", *, force: bool = False,
                     owner: str | None = None) -> KeyPair:
    """Write a new CURVE key pair as ``<directory>/<name>.key`` (public, 0644) and
    ``<name>.key_secret`` (0600). With ``owner`` (a user name: the service user that
    will read it) the secret file belongs to that user and its group, and a directory
    created here is ``root``-owned 0750 in that group, as the package makes
    /etc/towerd/keys; without, both belong to the caller and a new directory is 0700.
    Refuses to replace existing files unless ``force``. Raises ConfigError for a bad
    name, an unknown owner, or when libzmq has no CURVE; OSError for file system failures
    (PermissionError when the caller may not give files away)."""
    if not TOWER_ID_RE.fullmatch(name):
        raise ConfigError(f"key name {name!r} is not 1-64 characters of [A-Za-z0-9._-]")
    import zmq

    if not zmq.has("curve"):
        raise ConfigError(f"this libzmq ({zmq.zmq_version()}) has no CURVE support: cannot make keys")
    ids = None
    if owner is not None:
        try:
            pw = pwd.getpwnam(owner)
        except KeyError:
            raise ConfigError(f"no user {owner!r} on this machine to own the secret key") from None
        ids = (pw.pw_uid, pw.pw_gid)
    d = Path(directory)
    if ids is not None and ids[0] != os.geteuid() and not d.exists():
        d.mkdir(mode=0o700, parents=True)
        os.chown(d, os.geteuid(), ids[1])
        os.chmod(d, 0o750)
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    public, secret = zmq.curve_keypair()
    public_file = d / f"{name}{PUBLIC_SUFFIX}"
    secret_file = d / f"{name}{SECRET_SUFFIX}"
    if not force:
        for f in (public_file, secret_file):
            if f.exists():
                raise FileExistsError(f"{f} exists; refusing to replace a key (use --force to do so)")
    _write_new(secret_file, _certificate(_SECRET_BANNER, public, secret), 0o600, force, ids)
    _write_new(public_file, _certificate(_PUBLIC_BANNER, public), 0o644, force)
    log.info("key pair %s written to %s", name, d)
    return KeyPair(public_file=public_file, secret_file=secret_file, public_key=public.decode("ascii"))


def allow_tower(tower_id: str, public_key_file: str | os.PathLike, allow_dir: str | os.PathLike, *,
                force: bool = False) -> Path:
    """Put a tower's public key on a central's allow-list as ``<allow_dir>/<tower_id>.key``.
    Refuses a bad tower id, a key already allowed under another tower id (one key, one
    tower), and replacing an existing entry unless ``force``. Returns the file written."""
    if not TOWER_ID_RE.fullmatch(tower_id):
        raise ConfigError(f"tower id {tower_id!r} is not 1-64 characters of [A-Za-z0-9._-]")
    public = load_public_key_file(public_key_file)
    d = Path(allow_dir)
    d.mkdir(mode=0o755, parents=True, exist_ok=True)
    current, _ = load_allow_list(d)
    other = current.tower_of(public)
    if other is not None and other != tower_id:
        raise ConfigError(f"this key is already allowed for tower {other!r} ({d / (other + PUBLIC_SUFFIX)}); "
                          "a key belongs to exactly one tower")
    target = d / f"{tower_id}{PUBLIC_SUFFIX}"
    if target.exists() and not force:
        raise FileExistsError(f"{target} exists; refusing to replace tower {tower_id}'s key (use --force)")
    _write_new(target, _certificate(_PUBLIC_BANNER, public, metadata={"tower-id": tower_id}), 0o644, force)
    return target


# ------------------------------------------------------------------------------ allow-list


@dataclass(frozen=True)
class AllowList:
    """Allowed tower public keys (Z85) and the one tower id each belongs to."""

    towers: Mapping[bytes, str]

    def tower_of(self, public_key_z85: bytes) -> str | None:
        return self.towers.get(public_key_z85)

    def __len__(self) -> int:
        return len(self.towers)


def allow_dir_signature(directory: str | os.PathLike) -> tuple:
    """Something that changes whenever an entry of the allow-list directory changes
    (names, sizes, modification times); cheap enough to compute every few seconds."""
    d = Path(directory)
    try:
        entries = []
        with os.scandir(d) as it:
            for e in it:
                try:
                    st = e.stat()
                except OSError:
                    continue
                entries.append((e.name, st.st_mtime_ns, st.st_size, st.st_ino))
        return (d.stat().st_mtime_ns, tuple(sorted(entries)))
    except OSError as exc:
        return ("error", str(exc))


def load_allow_list(directory: str | os.PathLike, *, raise_io_errors: bool = False) -> tuple[AllowList, list[str]]:
    """Read ``<tower-id>.key`` files; returns the allow-list and the problems found
    (each names a file). A missing or unreadable directory gives an empty list (nobody
    is admitted) and a problem; a key listed under two tower ids is left out.
    ``raise_io_errors``: an OSError listing the directory or reading a file is raised
    instead (a running central keeps its last good list: EMFILE is not a revocation)."""
    d = Path(directory)
    problems: list[str] = []
    by_key: dict[bytes, list[str]] = {}
    try:
        names = sorted(os.listdir(d))
    except OSError as exc:
        if raise_io_errors:
            raise
        return AllowList({}), [f"allow-list directory {d}: {exc.strerror or exc}; no tower is admitted"]
    for fname in names:
        path = d / fname
        if fname.endswith(SECRET_SUFFIX):
            problems.append(f"{path}: a secret key file in the allow-list directory (only public keys belong "
                            "here); ignored")
            continue
        if not fname.endswith(PUBLIC_SUFFIX) or fname.startswith("."):
            continue
        tower_id = fname[: -len(PUBLIC_SUFFIX)]
        if not TOWER_ID_RE.fullmatch(tower_id):
            problems.append(f"{path}: file name is not <tower-id>{PUBLIC_SUFFIX}; ignored")
            continue
        try:
            public, _ = _parse_certificate(path.read_bytes())
        except OSError as exc:
            if raise_io_errors:
                raise
            problems.append(f"{path}: cannot read: {exc.strerror or exc}; ignored")
            continue
        if not public or not _valid_z85_key(public):
            problems.append(f"{path}: no valid public key; ignored")
            continue
        by_key.setdefault(public, []).append(tower_id)
    towers: dict[bytes, str] = {}
    for key, ids in by_key.items():
        if len(ids) > 1:
            problems.append(f"{d}: one key is listed for towers {', '.join(ids)}; a key belongs to exactly one "
                            "tower, so it is refused for all of them")
            continue
        towers[key] = ids[0]
    return AllowList(towers), problems


# ------------------------------------------------------------------------------ command line


def _cmd_generate(args: argparse.Namespace) -> int:
    from towerd.files import access_problem, service_account

    try:
        account = service_account(args.owner)
        owner = None if account.current else account.name
        pair = generate_keypair(args.dir, args.name, force=args.force, owner=owner)
    except (ConfigError, OSError) as exc:
        print(f"towerd keys generate: {exc}", file=sys.stderr)
        return 1
    print(f"public key: {pair.public_key}")
    print(f"wrote {pair.secret_file} (secret key, mode 0600, owner {account.name}: keep it on this machine)")
    why = access_problem(account, pair.secret_file, os.R_OK)
    if why:
        print(f"warning: {pair.secret_file}: {why}: the daemon running as {account.name} could not read it",
              file=sys.stderr)
    print(f"wrote {pair.public_file} (public key)")
    print(f"for a tower: on the central, run `towerd keys allow --tower-id <tower id> {pair.public_file.name} "
          "--dir <allow-list dir>`")
    print(f"for a central: give {pair.public_file.name} to every tower (server_public_key_file)")
    return 0


def _cmd_allow(args: argparse.Namespace) -> int:
    try:
        target = allow_tower(args.tower_id, args.public_key_file, args.dir, force=args.force)
    except (ConfigError, OSError) as exc:
        print(f"towerd keys allow: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {target}: tower {args.tower_id} is allowed (a running central reloads the directory by itself)")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    try:
        check_secret_key_file(args.secret_key_file)
    except ConfigError as exc:
        print(f"towerd keys check: {exc}", file=sys.stderr)
        return 1
    print(f"{args.secret_key_file}: secret key file OK")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``towerd keys generate|allow|check`` (the cli.COMMAND_MODULES hook)."""
    keys = subparsers.add_parser("keys", help="CURVE key pairs for the uplink and the central's allow-list")
    actions = keys.add_subparsers(dest="keys_action", required=True, metavar="ACTION")

    p = actions.add_parser("generate", help="write a key pair (<name>.key, <name>.key_secret mode 0600) and "
                           "print the public key")
    p.add_argument("--dir", required=True, help="directory for the two files (created mode 0700 if missing)")
    p.add_argument("--name", default="tower", help="file name stem (default: tower)")
    p.add_argument("--force", action="store_true", help="replace existing files")
    p.add_argument("--owner", help="user who owns the secret key: the user the daemon runs as (default: the "
                   "service user 'towerd' when run as root and it exists, else you)")
    p.set_defaults(func=_cmd_generate)

    p = actions.add_parser("allow", help="central side: allow a tower's public key, bound to its tower id")
    p.add_argument("--tower-id", required=True, help="the tower id (its ZeroMQ routing id) this key speaks for")
    p.add_argument("public_key_file", help="the tower's public key file (<name>.key)")
    p.add_argument("--dir", required=True, help="the central's allow-list directory")
    p.add_argument("--force", action="store_true", help="replace the tower's existing key")
    p.set_defaults(func=_cmd_allow)

    p = actions.add_parser("check", help="check a secret key file as `towerd run` does (mode, content)")
    p.add_argument("secret_key_file")
    p.set_defaults(func=_cmd_check)
