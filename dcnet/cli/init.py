"""``dcnet-init [OPTIONS] -- COMMAND``: the container init (see :mod:`dcnet.init`).

Exit codes: the app's (128+N when signal N ended it); 2 for a usage or configuration
error (nothing started).
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    from dcnet.init.config import ConfigError, parse
    from dcnet.init.supervisor import Supervisor

    try:
        config = parse(sys.argv[1:] if argv is None else argv)
    except ConfigError as exc:
        print(f"dcnet-init: {exc}", file=sys.stderr)
        sys.exit(2)
    try:
        code = Supervisor(config).run()
    except OSError as exc:          # the command cannot be started
        print(f"dcnet-init: cannot start {config.command[0]!r}: {exc.strerror or exc}",
              file=sys.stderr)
        code = 127 if isinstance(exc, FileNotFoundError) else 126
    sys.exit(code)


if __name__ == "__main__":
    main()
