"""`python -m gateway` is the `chatops-gateway` command."""

from gateway.cli import main

main()
