"""``python -m persd.cli`` (e.g. under ``accelerate launch -m persd.cli train ...``)."""

from persd.cli.mount import main

main()
