"""`python -m digits.serve`: the server's command line (digits.serve.server.main)."""

import sys

from digits.serve.server import main

if __name__ == "__main__":  # not when a spawned worker process imports this module again
    sys.exit(main())
