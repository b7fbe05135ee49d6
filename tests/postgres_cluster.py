"""A throwaway PostgreSQL server for the feedback store's tests: a cluster made by initdb in a temp folder, listening
on 127.0.0.1 at a free port, stopped and deleted afterwards. Debian's `postgresql` package provides the binaries.

    python tests/postgres_cluster.py start DIR    prints the server's URL (.ci/run exports it for the tests)
    python tests/postgres_cluster.py stop DIR

PostgreSQL refuses to run as root, so as root (CI runs as root) the cluster belongs to `nobody`; the folder must
then be one `nobody` can reach (a fresh `mktemp -d` in /tmp, which this chowns). Standard library only: .ci/run
calls it with the system python, before the project's venv exists.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
from pathlib import Path

UNPRIVILEGED_USER = "nobody"


def find_binaries() -> Path | None:
    """The folder holding initdb and pg_ctl: Debian's /usr/lib/postgresql/<version>/bin (newest), else PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda path: _version(Path(path).parts[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def _as_owner() -> list[str]:
    return ["runuser", "-u", UNPRIVILEGED_USER, "--"] if os.geteuid() == 0 else []


def _run(command: list[str]) -> None:
    # cwd /: the unprivileged user may not be allowed into the caller's folder
    result = subprocess.run([*_as_owner(), *command], cwd="/", capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{Path(command[0]).name} failed: {(result.stderr or result.stdout).strip()[-2000:]}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(folder: str | Path) -> str:
    """A new cluster in `folder` (created, or an empty one), its server started; returns its SQLAlchemy URL."""
    binaries = find_binaries()
    if binaries is None:
        raise RuntimeError("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        user = pwd.getpwnam(UNPRIVILEGED_USER)
        os.chown(folder, user.pw_uid, user.pw_gid)
    data, port = folder / "data", _free_port()
    _run([str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    _run([str(binaries / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start"])
    return f"postgresql://postgres@127.0.0.1:{port}/postgres"


def stop(folder: str | Path) -> None:
    """Stop the server of the cluster in `folder` (if it runs) and delete the folder."""
    folder = Path(folder).resolve()
    binaries = find_binaries()
    if binaries is not None and (folder / "data" / "postmaster.pid").is_file():
        _run([str(binaries / "pg_ctl"), "-D", str(folder / "data"), "-m", "immediate", "-w", "stop"])
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("start", "stop"):
        sys.exit("usage: python tests/postgres_cluster.py start|stop DIR")
    if sys.argv[1] == "start":
        print(start(sys.argv[2]))
    else:
        stop(sys.argv[2])
