"""`python -m gateway` is the `chatops-gateway` command."""

from gateway.cli.commands import main

main()
