"""Configuration and the pieces both the core and the edge read (it imports neither)."""
