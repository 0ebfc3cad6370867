"""``python -m sealpost.cli``: the same as the ``sealpost`` command."""

import sys

from sealpost.cli import main

sys.exit(main())
