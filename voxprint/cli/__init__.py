"""The ``voxprint`` command.

Exit codes: 0 success (for ``verify``: accept), 1 an error (one ``voxprint: error: ...`` line on
stderr), 2 a usage error (argparse's message), 3 ``verify`` rejected the test recording, 130
interrupted. Results go to stdout (``--json``: one JSON object per line); progress bars and
warnings go to stderr.

Each sibling module registers the verbs of one concern with :func:`voxprint.cli.core.verb`.
"""
from voxprint.cli import (  # noqa: F401  (each module registers its verbs)
    data,
    diarization,
    export,
    fusion,
    identification,
    service,
    store,
    training,
    verification,
)
from voxprint.cli.core import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REJECT,
    EXIT_USAGE,
    VERBS,
    build_parser,
    main,
)

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_REJECT", "EXIT_USAGE", "VERBS", "build_parser", "main"]
