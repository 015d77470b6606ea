"""Real peers (Synapse, ...) started on 127.0.0.1 for the integration tests."""
