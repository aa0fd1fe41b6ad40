import sys

from voxprint.cli import main

sys.exit(main())
