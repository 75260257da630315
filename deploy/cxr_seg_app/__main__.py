"""``python deploy/cxr_seg_app -i ... -o ... -m ...`` runs the app, as the SDK's packager expects."""

import sys

from app import main

if __name__ == "__main__":
    sys.exit(main())
