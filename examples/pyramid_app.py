"""A Pyramid app with its /premium pages sold through AlloConv.

Run it with ``ALLOCONV_API_KEY`` and ``ALLOCONV_SECRET`` set (see examples/README.md)::

    python examples/pyramid_app.py

A Pyramid project served with ``pserve`` can put the gate in its ini file instead of its
code, as a filter in front of the app::

    [app:site]
    use = egg:mysite

    [filter:alloconv]
    use = egg:alloconv_gate
    api_key_file = /etc/mysite/alloconv-key
    secret_file = /etc/mysite/alloconv-secret
    palier = fra1
    prefixes = /premium

    [pipeline:main]
    pipeline = alloconv site
"""

import logging
import os
from wsgiref.simple_server import make_server

from pyramid.config import Configurator
from pyramid.response import Response

from alloconv_gate import Gate


def home(request):
    return Response("Free page: anyone can read this.", content_type="text/plain")


def article(request):
    return Response(
        "Premium article: only visitors with a code read this.", content_type="text/plain"
    )


def make_app(**gate_options):
    """The Pyramid app with the gate; ``gate_options`` are Gate's (api_key, secret...)."""
    with Configurator() as config:
        config.add_route("home", "/")
        config.add_view(home, route_name="home")
        config.add_route("article", "/premium/article")
        config.add_view(article, route_name="article")
        app = config.make_wsgi_app()
    # The gate answers before Pyramid: a visitor without a code never reaches a view.
    return Gate(app, palier="fra1", prefixes="/premium", **gate_options)


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
    # wsgiref serves one request at a time: enough to try, not for a real site.
    with make_server("127.0.0.1", 8000, make_app(**gate_options_from_environ())) as server:
        print("Serving on http://127.0.0.1:8000/")
        server.serve_forever()
