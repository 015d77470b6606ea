"""The command line: the `chatops-gateway` commands (the only place that exits the process),
the operator's read-only views of the store, and `status`."""
