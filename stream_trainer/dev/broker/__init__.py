"""A real single-node Kafka run from Maven Central jars, for tests and the demo.

`local_broker.LocalKafkaBroker` owns one broker process; `daemon` runs one detached
(``python -m stream_trainer.dev.broker start|stop|status``, or `scripts/kafka-local`).
Its Maven pom and log4j2 configuration ship as package data in ``resources/``.
"""
