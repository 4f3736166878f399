"""A tiny content site to put behind the gate in the demo.

It knows nothing of payments: the gate in front of it decides who reaches ``/premium/``.
A premium page only reads ``alloconv_gate.access_until`` from the environ, which the gate
sets, to tell the visitor how long the access they paid for lasts.
"""

import datetime
import html

from webob import Response
from webob.dec import wsgify

FREE = {
    "/free/how-it-works": (
        "How the demo works",
        "This article is free: anyone can read it. The premium articles sit behind the "
        "AlloConv gate, which asks for a code before letting you in. In real life you would "
        "get the code by calling a premium-rate number; here the sandbox hands them out.",
    ),
}
PREMIUM = {
    "/premium/alpine-huts": (
        "A winter in the Alpine huts",
        "The warden opens the hut at dawn, when the snow still squeaks underfoot. By noon the "
        "first ski tourers arrive, and the stove has not gone out since November.",
    ),
    "/premium/night-trains": (
        "The return of the night trains",
        "Board in Paris after dinner, wake up in the Alps. The couchettes are narrow, the "
        "coffee is strong, and the view from the window at six is worth the ticket.",
    ),
}

_STYLE = (
    "body{font-family:Georgia,serif;margin:0 auto;max-width:36em;padding:1em;line-height:1.5}"
    ".access{background:#e7f5e9;padding:.5em .75em}"
    "a{color:#0645ad}"
)


class DemoSite:
    """The demo's content: a home page, one free article and two premium ones.

    :param sandbox_url: where the sandbox's codes page is served, linked from the home page.
    """

    def __init__(self, *, sandbox_url="/sandbox/"):
        self.sandbox_url = sandbox_url

    @wsgify
    def __call__(self, req):
        path, home = req.path_info, req.script_name + "/"
        if path in ("", "/"):
            return _page("AlloConv gate demo", self._home(req.script_name))
        if path in FREE:
            return _page(*_article(FREE[path]), home=home)
        if path in PREMIUM:
            title, body = _article(PREMIUM[path])
            note = _access_note(req.environ.get("alloconv_gate.access_until"))
            return _page(title, body + note, home=home)
        return Response("Not found\n", status=404, content_type="text/plain")

    def _home(self, script_name):
        def link(path, title):
            return f'<li><a href="{html.escape(script_name + path)}">{html.escape(title)}</a></li>'

        free = "".join(link(path, title) for path, (title, _) in FREE.items())
        premium = "".join(link(path, title) for path, (title, _) in PREMIUM.items())
        return (
            "<p>This site shows the AlloConv gate at work. The free article is open to all; "
            "the premium articles ask for an AlloConv code, which buys access for a while.</p>"
            f"<h2>Free</h2><ul>{free}</ul>"
            f"<h2>Premium</h2><ul>{premium}</ul>"
            "<p>No real call is needed: take a test code from the "
            f'<a href="{html.escape(self.sandbox_url)}">AlloConv sandbox codes page</a>.</p>'
        )


def _article(entry):
    title, text = entry
    return title, f"<p>{html.escape(text)}</p>"


def _access_note(access_until):
    if isinstance(access_until, bool) or not isinstance(access_until, int):
        return ""
    until = datetime.datetime.fromtimestamp(access_until, datetime.timezone.utc)
    return f'<p class="access">Your access lasts until {until:%Y-%m-%d %H:%M} UTC.</p>'


def _page(title, body, *, home=None):
    back = f'<p><a href="{html.escape(home)}">Back to the home page</a></p>' if home else ""
    return Response(
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}{back}</body></html>\n",
        content_type="text/html",
        charset="utf-8",
    )


def make_app(global_conf=None, **settings):
    """PasteDeploy ``paste.app_factory`` for :class:`DemoSite`, which takes no settings."""
    if settings:
        raise ValueError(f"unknown demo setting(s): {', '.join(sorted(settings))}")
    return DemoSite()
