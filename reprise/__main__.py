"""`python -m reprise`: the platform's command line."""

from reprise.cli import exit_now, main

exit_now(main())
