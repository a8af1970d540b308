import sys

from vfer.cli import main

sys.exit(main())
