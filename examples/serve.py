"""Serve a PasteDeploy ini file: its ``main`` app with its ``main`` server.

python examples/serve.py examples/demo.ini
"""

import contextlib
import logging
import os
import sys

from paste.deploy import loadapp, loadserver


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        sys.exit(f"usage: {argv[0]} CONFIG.ini")
    config = f"config:{os.path.abspath(argv[1])}"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app = loadapp(config)
    server = loadserver(config)
    print(
        "\nalloconv_gate demo on http://127.0.0.1:6543/\n"
        "  paid pages:  http://127.0.0.1:6543/premium/alpine-huts\n"
        "  test codes:  http://127.0.0.1:6543/sandbox/\n"
        "Press Ctrl+C to stop.\n",
        flush=True,
    )
    with contextlib.suppress(KeyboardInterrupt):
        server(app)


if __name__ == "__main__":
    main(sys.argv)
