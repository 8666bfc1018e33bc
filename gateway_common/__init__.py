"""Configuration, CLI and the pieces both the core and the edge read."""
