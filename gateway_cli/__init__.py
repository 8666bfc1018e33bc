"""The ``inference-gateway`` command line: above the core and the edge, which it starts and wires."""
