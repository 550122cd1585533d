import sys

from kubeweft.cli import main

sys.exit(main())
