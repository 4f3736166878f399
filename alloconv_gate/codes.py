"""What the gate does with a visitor's code before and after AlloConv sees it.

A code is worth money until it is used, so it is never stored or logged in clear: logs
show it masked (``AB12****``), and records keep a keyed hash of it, from which support
can find a record when the visitor reads the code out again, but which does not hand
out codes if it leaks.
"""

from __future__ import annotations

import hashlib
import hmac

MIN_LENGTH = 8
MAX_LENGTH = 64


def local_problem(code: str) -> str | None:
    """Why ``code`` cannot be an AlloConv code (a catalogue key), or None if it may be.

    Checked before AlloConv is asked, so that a typo costs no call.
    """
    if not code:
        return "error_empty"
    if len(code) < MIN_LENGTH:
        return "error_too_short"
    if len(code) > MAX_LENGTH:
        return "error_too_long"
    if not (code.isascii() and code.isalnum()):
        return "error_characters"
    return None


def mask_code(code: str) -> str:
    """``AB12****``: enough for support to recognise a code, not enough to use it."""
    return code[:4] + "****"


def code_hash(secret: str, code: str) -> str:
    """A keyed hash of ``code`` (hex): the same code always gives the same hash."""
    return hmac.new(
        secret.encode(), b"alloconv_gate.code:" + code.encode(), hashlib.sha256
    ).hexdigest()


def reference(hashed: str) -> str:
    """A short reference for a code (from its :func:`code_hash`), to show the visitor;
    support finds the record by it, in the logs and the journal."""
    return hashed[:10].upper()
