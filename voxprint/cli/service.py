"""Verbs of the HTTP service: ``serve`` and ``keys`` (create, list and revoke API keys)."""
from __future__ import annotations

import argparse
import ipaddress
import os
import sys

from voxprint.cli.core import (
    EXIT_OK,
    default_threads,
    emit,
    json_option,
    positive_float,
    positive_int,
    thread_option,
    verb,
)
from voxprint.errors import VoxprintError


def _non_negative_float(text: str) -> float:
    """argparse type: a number of at least 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", required=True, help="speaker store: a SQLite file (created when missing), or "
                                                  "postgresql://USER@HOST:PORT/DB for several workers or hosts")
    p.add_argument("--model", default=None, help="trained run folder, or a built-in model ('default', 'ivector', "
                                                 "'fused'); default: the model a SQLite --store was made with, "
                                                 "else 'default'")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    thread_option(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: %(default)s, this machine only; 0.0.0.0 exposes the "
                        "service to the network, put TLS in front of it)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default: %(default)s)")
    p.add_argument("--workers", type=positive_int, default=1,
                   help="worker processes, each with its own model copy (default: %(default)s)")
    p.add_argument("--concurrency", type=positive_int, default=2,
                   help="requests embedding audio at once per worker; more wait (default: %(default)s)")
    p.add_argument("--max-upload-mb", type=positive_float, default=25.0,
                   help="largest request body in MiB, answered 413 beyond (default: %(default)s)")
    p.add_argument("--max-audio-seconds", type=positive_float, default=300.0,
                   help="longest recording in seconds, answered 413 beyond (default: %(default)s)")
    p.add_argument("--rate-limit", type=_non_negative_float, default=600.0,
                   help="requests a minute per API key and worker, answered 429 beyond; 0: no limit "
                        "(default: %(default)s)")
    p.add_argument("--timeout", type=positive_float, default=60.0,
                   help="seconds from a request's arrival to its response, answered 504 beyond (default: %(default)s)")
    p.add_argument("--cors-origin", action="append", default=[],
                   help="an origin (e.g. https://app.example.com) whose pages may call the API; repeat for "
                        "several (default: none, no CORS headers)")
    p.add_argument("--no-optimize", action="store_true",
                   help="do not trace the encoder at start-up (starts a few seconds sooner, embeds about 20 %% slower)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn's log level (default: %(default)s)")


@verb("serve", "run the HTTP service (JSON API under /v1, web page at /, docs at /docs) over a speaker store",
      "voxprint serve --store speakers.db --port 8000   # after: voxprint keys create --store speakers.db --role admin",
      _serve_args)
def _serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError:
        raise VoxprintError("the service needs FastAPI and uvicorn: pip install 'voxprint[service]'") from None
    from voxprint.service.postgres import is_postgres_url
    from voxprint.service.settings import ENVIRONMENT_VARIABLE, ServiceConfig
    from voxprint.service.storage import open_store

    store = args.store if is_postgres_url(args.store) else os.path.abspath(args.store)
    config = ServiceConfig(store=store, model=args.model, device=args.device,
                           threads=args.threads or default_threads(), concurrency=args.concurrency,
                           max_upload_bytes=int(args.max_upload_mb * 2 ** 20),
                           max_audio_seconds=args.max_audio_seconds, rate_limit=args.rate_limit,
                           timeout=args.timeout, cors_origins=tuple(args.cors_origin),
                           optimize=not args.no_optimize)
    if not _is_loopback(args.host):
        print(f"voxprint: note: listening on {args.host}: the service is reachable from other machines; "
              "serve it behind TLS", file=sys.stderr)
    options = dict(host=args.host, port=args.port, log_level=args.log_level, server_header=False,
                   timeout_keep_alive=5)
    if args.workers == 1:
        # One process: the app is built here, so a bad model or store is one line before uvicorn starts.
        from voxprint.service.app import create_app

        uvicorn.run(create_app(config), **options)
        return EXIT_OK
    # Several: each worker process builds its app from the settings; checked here first, once, so a bad
    # model or store is one line instead of a traceback per worker.
    from voxprint.inference import load_model

    open_store(config.store, load_model(config.model, device=config.device)).table.close()
    os.environ[ENVIRONMENT_VARIABLE] = config.to_json()
    uvicorn.run("voxprint.service.app:app_from_environment", factory=True, workers=args.workers, **options)
    return EXIT_OK


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _keys_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["create", "list", "revoke"], help="what to do")
    p.add_argument("--store", required=True, help="the service's speaker store: a SQLite file (created when "
                                                  "missing) or a postgresql:// URL")
    p.add_argument("--role", choices=["admin", "user"], default="user",
                   help="create: admin may also enroll and delete speakers (default: %(default)s)")
    p.add_argument("--label", default="", help="create: what the key is for (shown by `keys list`)")
    p.add_argument("--id", dest="key_id", help="revoke: the key's id (from `keys list`)")
    json_option(p)


@verb("keys", "create, list or revoke the service's API keys (a new key is printed once; only its hash is stored)",
      "voxprint keys create --store speakers.db --role admin --label ops", _keys_args)
def _keys(args: argparse.Namespace) -> int:
    from voxprint.service.storage import open_keys

    keys = open_keys(args.store, create=args.action == "create")
    if args.action == "create":
        record, token = keys.create(args.role, args.label)
        emit(args, {**record.to_dict(), "key": token},
             f"created {record.role} key {record.id} (shown once, keep it secret): {token}")
    elif args.action == "list":
        for record in keys.list():
            state = "revoked" if record.revoked is not None else "active"
            emit(args, record.to_dict(), f"{record.id}\t{record.role}\t{state}\t{record.label}")
    else:
        if not args.key_id:
            raise VoxprintError("`keys revoke` needs the key's id: voxprint keys revoke --store DB --id KEY_ID")
        record = keys.revoke(args.key_id)
        emit(args, record.to_dict(), f"revoked key {record.id}")
    return EXIT_OK
