import sys

from hwdeploy.cli import main

sys.exit(main())
