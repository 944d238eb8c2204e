"""A throwaway PostgreSQL server for tests: Debian's binaries (``make setup`` installs the ``postgresql`` package
when missing), a cluster in a temporary folder started and stopped by the test itself, on a free port of
127.0.0.1. PostgreSQL refuses to run as root, so where the tests run as root (CI) the server runs as the
``postgres`` user."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from serving_support import free_port


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's bin folder (with initdb and pg_ctl), or None."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda path: int(path.parts[-3]))
    return found[-1].parent if found else None


def postgres_missing() -> str | None:
    """Why no server can be started here, or None."""
    if postgres_bin() is None:
        return "PostgreSQL is not installed (`make setup` installs Debian's postgresql package)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser to start PostgreSQL as the postgres user"
    return None


def _as_server_user(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def psql(url_parts: dict[str, str], query: str) -> list[str]:
    """Rows of ``query`` (one string per row, columns joined by ``|``) through the psql client."""
    result = subprocess.run([str(postgres_bin() / "psql"), "-h", "127.0.0.1", "-p", url_parts["port"], "-U",
                             "postgres", "-d", url_parts["database"], "-At", "-c", query],
                            capture_output=True, text=True, timeout=60, check=True)
    return result.stdout.splitlines()


@contextmanager
def postgres_server(database: str = "prefect") -> Iterator[dict[str, str]]:
    """A running server with an empty ``database``: {"url" (SQLAlchemy asyncpg URL), "port", "database", "log"}."""
    binaries = postgres_bin()
    assert binaries is not None, postgres_missing()
    root = Path(tempfile.mkdtemp(prefix="zssbir-postgres-"))  # under /tmp: the postgres user can reach it
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data, log, port = root / "data", root / "server.log", str(free_port())
    run = dict(capture_output=True, text=True, timeout=120, check=True)
    try:
        subprocess.run(_as_server_user([str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                                        "--no-sync", "--encoding=UTF8"]), **run)
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(_as_server_user([str(binaries / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options,
                                        "-w", "start"]), **run)
        subprocess.run([str(binaries / "createdb"), "-h", "127.0.0.1", "-p", port, "-U", "postgres", database], **run)
        yield {"url": f"postgresql+asyncpg://postgres@127.0.0.1:{port}/{database}", "port": port,
               "database": database, "log": str(log)}
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(_as_server_user([str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                           capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)
