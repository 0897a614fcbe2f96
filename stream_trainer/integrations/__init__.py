"""Adapters that host stream-trainer's learners inside other stream processors."""
