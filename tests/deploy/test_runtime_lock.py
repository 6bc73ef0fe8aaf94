"""The image and servers install requirements-run.lock: runtime pins only, the dev lock's own.

`make lock` writes requirements.lock (runtime and dev tools, for `make install`)
and requirements-run.lock (what deploy/Dockerfile and DEPLOY.md install). The
run lock must pin exactly the dev lock's versions with the dev lock's hashes,
hold every runtime dependency of pyproject.toml, and none of the dev extra's.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def pins(lock: Path) -> dict[str, tuple[str, frozenset[str]]]:
    """name -> (version, hashes) of a pip-compile lock."""
    found: dict[str, tuple[str, frozenset[str]]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", lock.read_text()):
        head = re.match(r"([A-Za-z0-9_.\-]+)==(\S+)", block)
        if head:
            name = re.sub(r"[-_.]+", "-", head[1]).lower()
            found[name] = (head[2], frozenset(re.findall(r"--hash=(sha256:\w+)", block)))
    return found


def names(requirements: list[str]) -> set[str]:
    return {re.sub(r"[-_.]+", "-", re.split(r"[\[<>=!~ ;]", r)[0]).lower() for r in requirements}


def test_the_run_lock_has_the_runtime_pins_of_the_dev_lock_and_no_dev_tool() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dev_lock, run_lock = pins(ROOT / "requirements.lock"), pins(ROOT / "requirements-run.lock")
    for name, (version, hashes) in run_lock.items():
        assert name in dev_lock, name
        assert dev_lock[name][0] == version, name
        assert hashes and hashes <= dev_lock[name][1], name
    assert names(project["dependencies"]) <= set(run_lock)
    dev_only = names(project["optional-dependencies"]["dev"])
    assert dev_only & set(run_lock) == set()
    assert {"setuptools", "wheel"} <= set(run_lock)  # `pip install --no-build-isolation .`


def test_the_image_installs_the_run_lock() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "pip install --require-hashes -r requirements-run.lock" in dockerfile
    steps = [line for line in dockerfile.splitlines() if not line.startswith("#")]
    assert not [line for line in steps if re.search(r"\brequirements\.lock", line)]
