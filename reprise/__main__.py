"""`python -m reprise`: the platform's command line."""

import sys

from reprise.cli import main

sys.exit(main())
