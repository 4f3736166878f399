"""A Django project's wsgi.py with its /premium pages sold through AlloConv.

In a real project, the gate goes into the ``wsgi.py`` that ``startproject`` wrote::

    import os

    from django.core.wsgi import get_wsgi_application

    from alloconv_gate import Gate

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

    application = Gate(
        get_wsgi_application(),
        api_key=os.environ["ALLOCONV_API_KEY"],
        secret=os.environ["ALLOCONV_SECRET"],
        palier="fra1",
        prefixes="/premium",
    )

The gate wraps the whole Django app, so it answers before any Django middleware: a visitor
without a code never reaches a view, and Django's CSRF middleware never sees the code form
(the gate refuses forms posted from other sites itself). ``runserver`` serves this same
``application`` too, through the ``WSGI_APPLICATION`` setting.

This file stands alone, with its settings and URLs below in place of a project's, so that
``python examples/django_wsgi.py`` serves it (see examples/README.md for the environment).
"""

import logging
import os
from wsgiref.simple_server import make_server

from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.http import HttpResponse
from django.urls import path

from alloconv_gate import Gate


def home(request):
    return HttpResponse("Free page: anyone can read this.", content_type="text/plain")


def article(request):
    return HttpResponse(
        "Premium article: only visitors with a code read this.", content_type="text/plain"
    )


urlpatterns = [
    path("", home),
    path("premium/article", article),
]


def make_app(**gate_options):
    """The Django app with the gate; ``gate_options`` are Gate's (api_key, secret, api_base...)."""
    if not settings.configured:  # settings can be configured once per process
        settings.configure(
            DEBUG=False,
            ALLOWED_HOSTS=["127.0.0.1", "localhost"],
            ROOT_URLCONF=__name__,  # the urlpatterns above
            INSTALLED_APPS=[],
            MIDDLEWARE=[],
        )
    return Gate(get_wsgi_application(), palier="fra1", prefixes="/premium", **gate_options)


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
