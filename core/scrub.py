"""Text that came from a user's URL or a stranger's store, made safe to record and print.

`redact` strips credentials from every URL in a text: the user info of
`scheme://user:password@host/` and the value of every query parameter
(`?token=...`, a pre-signed URL's signature), whatever the scheme (http(s),
s3, gs, ...). Every URL vitreg records (results JSON, report.html, store
attributes), prints or puts in an error goes through it.

`plain` makes a value printable as one plain line: control characters (an
escape sequence, a carriage return, a terminal hyperlink) are shown as
`\\x1b`-style escapes instead of acting on the terminal. Rich markup is not
interpreted where vitreg prints store text: callers pass `rich.text.Text`.
"""

from __future__ import annotations

import logging
import re
from typing import Any

#: A URL: a scheme, `://`, then anything up to white space or a quote.
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
#: The user info after `//`: up to the last `@` before the path (RFC 3986, 3.2.1).
_USERINFO = re.compile(r"^(?P<scheme>[^:]+://)[^/?#]*@")
#: `?name=value` or `&name=value`: the value goes, the name stays.
_QUERY_VALUE = re.compile(r"(?P<name>[?&;][^=&#;]*=)[^&#;]*")
#: What replaces a query value.
HIDDEN = "REDACTED"

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def redact(text: Any) -> str:
    """`text` (a URL, or a message holding URLs) with their credentials removed."""
    def one(match: re.Match[str]) -> str:
        url = _USERINFO.sub(r"\g<scheme>", match.group(0))
        head, mark, query = url.partition("?")
        return head + mark + _QUERY_VALUE.sub(r"\g<name>" + HIDDEN, "?" + query)[1:] if mark \
            else url

    return _URL.sub(one, str(text))


def redact_values(value: Any) -> Any:
    """`value` (JSON-like: dicts, lists, strings) with every string redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_values(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_values(v) for v in value]
    return value


def plain(value: Any, *, newlines: bool = False) -> str:
    """`str(value)` with control characters shown as escapes (`\\x1b`), so that
    text from a store cannot move the cursor, hide text or plant a link;
    `newlines` keeps line breaks (a multi-line error message)."""
    text = str(value)

    def escape(match: re.Match[str]) -> str:
        char = match.group(0)
        return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"

    if not newlines:
        text = text.replace("\n", "\\n").replace("\t", " ")
    return _CONTROL.sub(escape, text)


def scrub(value: Any, *, newlines: bool = True) -> str:
    """Both: credentials out of URLs, control characters escaped."""
    return plain(redact(value), newlines=newlines)


def redact_logs() -> None:
    """Make every log record of this process carry its message scrubbed
    (zarr and fsspec log store URLs at DEBUG level). Idempotent."""
    make = logging.getLogRecordFactory()
    if getattr(make, "vitreg_redacts", False):
        return

    def scrubbed(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 (a bad format string is logging's own error to report)
            return record
        if "://" in message:
            record.msg, record.args = redact(message), None
        return record

    scrubbed.vitreg_redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(scrubbed)
