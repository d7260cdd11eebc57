"""The import graph keeps the layers apart: the pure pipeline and check-config load no
I/O library (ZeroMQ, SQLite), and the reference central does not lean on the tower's
uplink. Each case runs in a fresh interpreter and looks at sys.modules afterwards."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IO_LIBRARIES = ("zmq", "sqlite3", "_sqlite3")


def _modules_after(code: str) -> list[str]:
    """The modules loaded once ``code`` has run in a new interpreter."""
    probe = code + "\nimport sys, json\nprint('\\n' + json.dumps(sorted(sys.modules)))\n"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _under(modules: list[str], *roots: str) -> list[str]:
    return [m for m in modules if any(m == r or m.startswith(r + ".") for r in roots)]


def test_the_pipeline_imports_no_io_library():
    modules = _modules_after("import towerd.pipeline")
    assert "towerd.pipeline" in modules
    assert _under(modules, *IO_LIBRARIES) == []


def test_check_config_imports_no_io_library(tmp_path):
    """Schema only, and with the files it names checked (a plain central: no key pair
    to verify, which is the one check that needs libzmq)."""
    text = (ROOT / "config" / "towerd.yaml").read_text()
    assert "plain: false" in text and "state_dir: /var/lib/towerd" in text
    config = tmp_path / "towerd.yaml"
    config.write_text(text.replace("plain: false", "plain: true")
                      .replace("state_dir: /var/lib/towerd", f"state_dir: {tmp_path}"))
    for args in (["check-config", "--schema-only", str(config)], ["check-config", str(config)]):
        modules = _modules_after(f"from towerd.cli import main\nmain({args!r})")
        assert "towerd.config" in modules
        assert _under(modules, *IO_LIBRARIES) == [], args


@pytest.mark.parametrize("module", ["towerd.central.server", "towerd.central.pgstore"])
def test_the_central_does_not_import_the_uplink(module):
    modules = _modules_after(f"import {module}")
    assert module in modules
    assert _under(modules, "towerd.uplink", "towerd.outbox") == []


def test_the_probe_sees_what_is_imported():
    """The check above can fail: the uplink client does load ZeroMQ and the outbox."""
    modules = _modules_after("import towerd.uplink.client")
    assert "zmq" in modules and "towerd.outbox.sqlite" in modules and "sqlite3" in modules
    assert "towerd.uplink.client" in _under(modules, "towerd.uplink")
