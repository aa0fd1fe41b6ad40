"""The voice-verification HTTP service: ``voxprint serve`` (FastAPI + uvicorn) over a speaker store.

Start it (it listens on 127.0.0.1 unless told otherwise; ``--store postgresql://...`` for several
workers or hosts)::

    voxprint keys create --store speakers.db --role admin     # prints the key once, as its last word
    voxprint serve --store speakers.db --port 8000 [--workers 2]

Each route with ``curl`` (``KEY`` an admin key for the first and the fourth, any key elsewhere;
``X-API-Key: KEY`` works as well as the bearer token)::

    curl -H "Authorization: Bearer $KEY" -F files=@a1.flac -F files=@a2.flac -F name=Alice \\
         http://127.0.0.1:8000/v1/speakers/alice/enrollments
    curl -H "Authorization: Bearer $KEY" http://127.0.0.1:8000/v1/speakers
    curl -H "Authorization: Bearer $KEY" http://127.0.0.1:8000/v1/speakers/alice
    curl -H "Authorization: Bearer $KEY" -X DELETE http://127.0.0.1:8000/v1/speakers/alice
    curl -H "Authorization: Bearer $KEY" -F speaker=alice -F file=@test.flac http://127.0.0.1:8000/v1/verify
    curl -H "Authorization: Bearer $KEY" -F file=@call.flac -F top_k=3 http://127.0.0.1:8000/v1/identify
    curl -H "Authorization: Bearer $KEY" -F a=@a.flac -F b=@b.flac http://127.0.0.1:8000/v1/similarity
    curl -H "Authorization: Bearer $KEY" -F file=@a.flac http://127.0.0.1:8000/v1/embed
    curl -H "Authorization: Bearer $KEY" http://127.0.0.1:8000/metrics
    curl http://127.0.0.1:8000/healthz

The web page is at ``/`` and the OpenAPI documentation at ``/docs``.

- :mod:`voxprint.service.app`: the routes, the request guard (keys, limits, timeout) and error mapping;
- :mod:`voxprint.service.keys`: API keys, stored as hashes beside the store's tables;
- :mod:`voxprint.service.limits`: per-key rate limiting;
- :mod:`voxprint.service.metrics`: Prometheus-style metrics;
- :mod:`voxprint.service.uploads`: uploaded recordings decoded in memory with the CLI's checks;
- :mod:`voxprint.service.storage` and :mod:`voxprint.service.postgres`: SQLite or PostgreSQL;
- :mod:`voxprint.service.process`: the server in a child process (tests, benchmarks);
- :mod:`voxprint.service.settings`: the service's settings;
- ``static/``: the web page (plain HTML and JavaScript, no build step, nothing from elsewhere).

FastAPI, uvicorn and python-multipart are needed only here, psycopg only for PostgreSQL.
"""
from voxprint.service.settings import ServiceConfig

__all__ = ["ServiceConfig", "create_app"]


def create_app(config: ServiceConfig, model: object = None) -> object:
    """The service's ASGI app (see :func:`voxprint.service.app.create_app`); imports FastAPI on first use.

    Args:
        config: the settings.
        model: an already loaded model to share; default: load ``config.model``.

    Returns:
        The FastAPI app.
    """
    from voxprint.service.app import create_app as make

    return make(config, model)
