"""Kafka plumbing: client options and factories, topic admin, batched sends, restore.

Deliberately empty of imports so that ``import stream_trainer.kafka.<module>`` stays cheap.
"""
