import sys

try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C while Python was still importing: nothing made yet, nothing to keep
    print("plugtrace: interrupted", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
