import sys

from hwdeploy_conformance.cli import main

sys.exit(main())
