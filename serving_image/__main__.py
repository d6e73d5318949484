import signal
import sys

# Before the heavy imports: a SIGHUP this early must not kill the server. It is not lost either,
# since config.yaml is read after this; from then on the server queues SIGHUPs itself.
signal.signal(signal.SIGHUP, signal.SIG_IGN)

from serving_image.server import main  # noqa: E402

sys.exit(main())
