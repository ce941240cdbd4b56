import sys

from fastapi_gcp_tasks.cli import main

sys.exit(main())
