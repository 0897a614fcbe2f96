"""Live views of what the trainer publishes, for the Pulse services that use it.

    async with RuleView(settings) as rules:
        await rules.ready()
        trust = rules.get("rule.momentum.spx").trust

See `view` for the semantics and `table` for the latest-wins rules.
"""

from stream_trainer.views.table import TableStats, Update, VersionTable, supersedes
from stream_trainer.views.updates import UpdatesOverflowError, UpdateStream, ViewError
from stream_trainer.views.view import ModelView, RuleView, VersionView

__all__ = [
    "ModelView",
    "RuleView",
    "TableStats",
    "Update",
    "UpdateStream",
    "UpdatesOverflowError",
    "VersionTable",
    "VersionView",
    "ViewError",
    "supersedes",
]
