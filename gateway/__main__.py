"""`python -m gateway` is the `chatops-gateway` command."""

from gateway.cli.entry import main

main()
