import sys

from scaleserve.cli import main

sys.exit(main())
