"""PasteDeploy factories: ``use = egg:alloconv_gate`` and the sandbox and demo apps.

Every ini value arrives as a string; :func:`alloconv_gate.config.parse_options` converts
and checks them all when the ini is loaded, so a bad option stops ``loadapp`` (and the
server) with an error that names it.
"""

from __future__ import annotations

import functools

from . import demo, sandbox
from .config import parse_options
from .middleware import Gate


def filter_factory(global_conf, **local_conf):
    """``[filter:NAME]`` with ``use = egg:alloconv_gate``."""
    here = global_conf.get("here")
    parse_options(local_conf, here=here)  # fail now, at load time
    return functools.partial(Gate, here=here, **local_conf)


def sandbox_factory(global_conf, **local_conf):
    """``use = egg:alloconv_gate#sandbox``: the AlloConv stand-in."""
    return sandbox.make_app(global_conf, **local_conf)


def demo_factory(global_conf, **local_conf):
    """``use = egg:alloconv_gate#demo``: the demo content site."""
    return demo.make_app(global_conf, **local_conf)
