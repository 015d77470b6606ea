"""Configuration: the typed, frozen, validated models (the TOML file's sections), their
shared building blocks, and secrets read from files."""
