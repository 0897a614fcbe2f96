"""``python -m stream_trainer.dev.broker start|stop|status``: the detached local broker."""

import sys

from stream_trainer.dev.broker.daemon import main

sys.exit(main(sys.argv[1:]))
