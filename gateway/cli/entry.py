"""The `chatops-gateway` command's entry point (and `python -m gateway`'s).

Start-up allocates about 90,000 objects (modules, classes, pydantic schemas) and frees
almost none: the garbage collector, running every 700 allocations, only walks them again
and again (about a tenth of the daemon's time to READY). It is off from here until the
daemon has started (gateway.app turns it back on after READY=1, once what start-up built
is frozen out of later collections); a one-shot command runs without it and exits.
"""

from __future__ import annotations

import gc


def main() -> None:
    """Run the command line with garbage collection off during start-up."""
    gc.disable()
    from gateway.cli.commands import main as command  # noqa: PLC0415  (after gc.disable)

    command()
