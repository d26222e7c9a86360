"""``python -m orgaseg.cli``: the command line, as the ``orgaseg`` console script."""

import sys

from orgaseg.cli import main

sys.exit(main())
