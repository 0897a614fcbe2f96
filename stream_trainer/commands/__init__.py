"""The CLI's subcommands, one module each; `stream_trainer.cli` only parses and dispatches."""
