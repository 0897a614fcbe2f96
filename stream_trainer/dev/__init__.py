"""Development tooling: the local test broker, synthetic Pulse traffic and the demo.

The runtime (everything else in `stream_trainer`) never imports this package at module
level; `tests/unit/test_architecture.py` checks it. Only the CLI's ``demo`` command reaches
it, lazily, inside its handler.
"""
