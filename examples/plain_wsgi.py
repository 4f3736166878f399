"""A plain WSGI app with its /premium pages sold through AlloConv.

Run it with the API key AlloConv gave you and a long random secret::

    export ALLOCONV_API_KEY=your-key
    export ALLOCONV_SECRET="$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
    python examples/plain_wsgi.py

then open http://127.0.0.1:8000/. To try it without paying, run the sandbox and point the
gate at it: see examples/README.md.
"""

import logging
import os
from wsgiref.simple_server import make_server

from alloconv_gate import Gate


def site(environ, start_response):
    """The site as it was before: it knows nothing of payments."""
    path = environ.get("PATH_INFO", "/")
    if path == "/":
        status, body = "200 OK", "Free page: anyone can read this."
    elif path == "/premium/article":
        status, body = "200 OK", "Premium article: only visitors with a code read this."
    else:
        status, body = "404 Not Found", "Not found."
    start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
    return [body.encode("utf-8")]


def make_app(**gate_options):
    """The site behind the gate; ``gate_options`` are Gate's (api_key, secret, api_base...)."""
    # Only the paths under /premium are gated; "/" goes straight to the site.
    return Gate(site, palier="fra1", prefixes="/premium", **gate_options)


def gate_options_from_environ():
    """The key and the secret come from the environment: never write them in the code."""
    options = {
        "api_key": os.environ["ALLOCONV_API_KEY"],
        "secret": os.environ["ALLOCONV_SECRET"],
    }
    if os.environ.get("ALLOCONV_API_BASE"):
        options["api_base"] = os.environ["ALLOCONV_API_BASE"]
    return options


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)  # the gate logs to "alloconv_gate"
    # wsgiref serves one request at a time: enough to try, not for a real site
    # (use waitress, gunicorn or mod_wsgi there).
    with make_server("127.0.0.1", 8000, make_app(**gate_options_from_environ())) as server:
        print("Serving on http://127.0.0.1:8000/")
        server.serve_forever()
