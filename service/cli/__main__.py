"""`python -m service.cli`: the `huifang` command."""

import sys

from service.cli import main

sys.exit(main())
