import sys

from serving_image.server import main

sys.exit(main())
