"""The batch bridge: history in files -> the service's learning path, or -> the input topics.

``stream-trainer train`` reads JSON Lines / CSV / Parquet files (optionally ``.gz`` or
``.zst``), validates every line exactly as the service does and learns through the same
``TrainingBatch`` -> ``TaskState`` path, with no Kafka. ``stream-trainer backfill`` publishes
the same inputs into the input topics. Files are streamed: memory stays flat in their size.
"""
