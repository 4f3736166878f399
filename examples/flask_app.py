"""A Flask app with its /premium pages sold through AlloConv.

Run it with ``ALLOCONV_API_KEY`` and ``ALLOCONV_SECRET`` set (see examples/README.md)::

    python examples/flask_app.py
"""

import logging
import os
from datetime import datetime, timezone

from flask import Flask, request

from alloconv_gate import Gate


def make_app(**gate_options):
    """The Flask app with the gate; ``gate_options`` are Gate's (api_key, secret, api_base...)."""
    app = Flask(__name__)

    @app.get("/")
    def home():
        return "Free page: anyone can read this."

    @app.get("/premium/article")
    def article():
        # The gate tells the view until when (a Unix time) the visitor's access lasts, or
        # which search engine's verified crawler reads the page (with `crawlers`). Only the
        # gate sets these keys.
        text = "Premium article: only visitors with a code read this."
        until = request.environ.get("alloconv_gate.access_until")
        if until is None:  # a verified crawler (environ["alloconv_gate.crawler"])
            return text
        ends = datetime.fromtimestamp(until, timezone.utc)
        return f"{text} Your access lasts until {ends:%Y-%m-%d %H:%M} UTC."

    # Wrap app.wsgi_app, not app: `app` stays a Flask object, so `flask run`, app.test_client()
    # and the extensions still work. The gate answers before Flask: a visitor without a code
    # never reaches the view, and the gate checks its code form's origin itself.
    app.wsgi_app = Gate(app.wsgi_app, palier="fra1", prefixes="/premium", **gate_options)
    return app


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
    # Flask's development server; behind a real site, use waitress or gunicorn.
    make_app(**gate_options_from_environ()).run(host="127.0.0.1", port=8000)
