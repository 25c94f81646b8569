import sys

from p3d.cli import main

sys.exit(main())
