"""`stream-trainer run`: the service until SIGTERM/SIGINT, which drains and exits 0."""

from __future__ import annotations

import asyncio
import logging
import signal

from stream_trainer.config import Settings
from stream_trainer.service import Trainer

log = logging.getLogger(__name__)


async def run_service(settings: Settings, *, until_end: bool = False) -> int:
    trainer = Trainer(settings, until_end=until_end)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _on_signal, trainer, sig)
    try:
        await trainer.start()
        await trainer.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await trainer.stop()
    return 0


def _on_signal(trainer: Trainer, sig: signal.Signals) -> None:
    log.info("received %s: draining", sig.name)
    trainer.request_stop()
