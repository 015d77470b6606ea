"""chatops-gateway core: domain values, the pipeline, the store, the outbox, config, CLI and app."""
