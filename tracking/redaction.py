"""Credentials never recorded: the one redaction every writer and printer goes through.

A tracking URI may carry a credential (``http://user:password@host``), and MLflow reads
others from the environment (``MLFLOW_TRACKING_TOKEN``, ``MLFLOW_TRACKING_PASSWORD``, cloud
storage keys). None of them may reach a file, a param, a tag, a log line or the console:
tracking servers are shared by a team and output folders are copied around.

:func:`redact` replaces, in any text (or in the strings of a JSON-like value):

- the user-info of every URI: ``scheme://user:secret@host`` -> ``scheme://***@host``;
- the value of credential-like query parameters: ``?token=abc`` -> ``?token=***``;
- every literal occurrence of a credential-like environment variable's value (a name
  holding TOKEN, PASSWORD, SECRET, CREDENTIAL or ending in _KEY; values of 6 characters
  or more, so that short flags are not mistaken for secrets).

Used by ``tracking.files`` (every JSON and text file we write), ``TrackedRun`` (params and
tags, so MLflow, TensorBoard's hparams and the CSV logger's hparams.yaml), the CLIs' log
handler and error line, and the tracking agent. docs/security.md lists the places.
Nothing here imports beyond the standard library.
"""

from __future__ import annotations

import logging
import os
import re

MASK = "***"
# scheme://userinfo@ : userinfo stops at the first '/', '@', whitespace or quote
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)[^/@\s\"'<>]+@")
_QUERY_SECRET = re.compile(
    r"(?P<key>[?&;](?:access_token|token|password|passwd|secret|sig|signature|api_key|"
    r"apikey|key|sas)=)[^&;#\s\"'<>]+", re.IGNORECASE)
_SECRET_NAME = re.compile(r"TOKEN|PASSWORD|PASSWD|SECRET|CREDENTIAL|_KEY$|^KEY$|"
                          r"CONNECTION_STRING", re.IGNORECASE)
_MIN_SECRET_LENGTH = 6


def secret_environment_values() -> list[str]:
    """The values of this process's credential-like environment variables, longest first
    (so a secret holding another is masked whole)."""
    values = {value for name, value in os.environ.items()
              if _SECRET_NAME.search(name) and len(value) >= _MIN_SECRET_LENGTH}
    return sorted(values, key=len, reverse=True)


def _redact_text(text: str, secrets: list[str]) -> str:
    text = _USERINFO.sub(rf"\g<scheme>{MASK}@", text)
    text = _QUERY_SECRET.sub(rf"\g<key>{MASK}", text)
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


def redact(value):
    """``value`` with every credential masked: a str, or a dict / list / tuple of them
    (keys and values, recursively); numbers and other values are returned unchanged."""
    return _redact(value, secret_environment_values())


def _redact(value, secrets: list[str]):
    if isinstance(value, str):
        return _redact_text(value, secrets)
    if isinstance(value, dict):
        return {_redact(key, secrets): _redact(item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [_redact(item, secrets) for item in value]
    if isinstance(value, tuple):
        return tuple(_redact(item, secrets) for item in value)
    return value


def install_log_record_redaction() -> None:
    """Redact every log record's message as it is created, whichever handler prints it
    (MLflow installs a stream handler of its own on its logger when it is imported)."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "is_redacting", False):
        return

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is left to its handler
            return record
        record.msg, record.args = redact(message), ()
        return record

    factory.is_redacting = True
    logging.setLogRecordFactory(factory)


class RedactingFormatter(logging.Formatter):
    """A log formatter whose every line (message, arguments, traceback) is redacted, for
    the handlers our CLIs and the tracking agent install: MLflow's and Lightning's own log
    lines pass through it too."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))
