"""``voxprint serve`` in a child process on a free local port: for tests, benchmarks and scripts.

The server's output goes to a log file (a pipe nobody reads would fill and stall it); :meth:`start`
waits until ``/healthz`` answers, and names the log's last lines when the server dies first.

Example:
    >>> port = free_port()
    >>> 1024 <= port < 65536
    True
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Sequence

from voxprint.errors import VoxprintError

__all__ = ["ServerProcess", "free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class ServerProcess:
    """A ``voxprint serve`` child process.

    Args:
        store: the speaker store (a SQLite file or a ``postgresql://`` URL).
        args: further ``voxprint serve`` arguments (e.g. ``["--workers", "2"]``).
        host: the address to listen on.
        port: the port (default: a free one).
        log: where the server's output goes (default: a new temporary file).
        env: extra environment variables.
    """

    def __init__(self, store: str | os.PathLike, args: Sequence[str] = (), host: str = "127.0.0.1",
                 port: int | None = None, log: str | os.PathLike | None = None, env: dict[str, str] | None = None):
        self.store = str(store)  # a file, or a postgresql:// URL (which Path would mangle)
        self.args = list(args)
        self.host = host
        self.port = port or free_port(host)
        self.log = Path(log) if log else Path(tempfile.mkdtemp(prefix="voxprint-serve-")) / "server.log"
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 180.0) -> "ServerProcess":
        """Start the server and wait until it answers ``/healthz``.

        Returns:
            This object.

        Raises:
            VoxprintError: the server exited, or did not answer within ``timeout`` seconds.
        """
        command = [sys.executable, "-m", "voxprint", "serve", "--store", self.store, "--host", self.host,
                   "--port", str(self.port), *self.args]
        with open(self.log, "ab") as out:
            # Its own process group, so stopping it also stops uvicorn's worker processes.
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                            start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise VoxprintError(f"the server exited with code {self.process.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        self.kill()
        raise VoxprintError(f"the server did not answer within {timeout:g} s: {self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the server's output."""
        try:
            return " | ".join(self.log.read_text(errors="replace").strip().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        """Kill the server at once (SIGKILL to its process group): a crash, as far as it can tell."""
        self._signal(signal.SIGKILL)

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server cleanly (SIGTERM), killing it if it has not exited within ``timeout`` s."""
        self._signal(signal.SIGTERM)
        if self.process is not None:
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def _signal(self, sig: int) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            return
        if sig == signal.SIGKILL:
            self.process.wait()

    def request(self, method: str, path: str, key: str | None = None, fields: dict[str, str] | None = None,
                files: Sequence[tuple[str, str, bytes]] = (), timeout: float = 60.0) -> tuple[int, Any]:
        """One HTTP request with the standard library (no client package needed).

        Args:
            method: ``GET``, ``POST`` or ``DELETE``.
            path: e.g. ``/v1/speakers``.
            key: the API key, sent as a bearer token.
            fields: multipart text fields.
            files: multipart files as (field, file name, bytes).
            timeout: seconds to wait for the answer.

        Returns:
            The status code and the decoded JSON body (text when it is not JSON).
        """
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        body = None
        if fields or files:
            boundary = "voxprint" + os.urandom(12).hex()
            parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
                     for name, value in (fields or {}).items()]
            parts += [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                      f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n"
                      for name, filename, data in files]
            body = b"".join(parts) + f"--{boundary}--\r\n".encode()
            headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
        request = urllib.request.Request(self.url + path, data=body, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, payload = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, payload = exc.code, exc.read()
        try:
            return status, json.loads(payload)
        except ValueError:
            return status, payload.decode(errors="replace")

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
