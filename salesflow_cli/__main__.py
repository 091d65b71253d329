import sys

from salesflow_cli.main import main

sys.exit(main())
