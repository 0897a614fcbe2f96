"""stream-trainer: continuous training of Pulse rules and forecasters from Kafka streams."""

__version__ = "0.1.0"
