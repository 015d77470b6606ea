"""Running the daemon: the inbox worker, the SLA scheduler, the intake sinks adapters call,
the service's readiness and reload, health, metrics and logging."""
