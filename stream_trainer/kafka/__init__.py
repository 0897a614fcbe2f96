"""Kafka plumbing: the local test broker and (later) the client wrappers.

Deliberately empty of imports so that ``import stream_trainer.kafka.<module>`` stays cheap.
"""
