import sys

from cxrdoll.cli import main

sys.exit(main())
