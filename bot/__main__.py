"""`python -m bot` is the same as `sertakan`."""

from bot.cli import main

raise SystemExit(main())
