"""``python -m cacheclient``."""

import sys

from cacheclient.cli.main import main

sys.exit(main())
