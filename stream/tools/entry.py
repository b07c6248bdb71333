"""The ``stream-monitor`` command's entry point: a clear line when only the SDK is installed."""

from __future__ import annotations

import sys


def main() -> None:
    """Run the command line, or say which install it needs."""
    try:
        from stream.tools.cli import main as cli_main
    except ModuleNotFoundError as exc:
        sys.stderr.write(
            f"stream-monitor: the command line needs the monitor, not only the SDK (missing: {exc.name}); "
            "install it with: pip install 'stream-monitor[worker]'\n"
        )
        sys.exit(2)
    cli_main()
