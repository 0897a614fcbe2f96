"""`stream-trainer demo`: the command (`command`), its traffic, live progress and report."""
