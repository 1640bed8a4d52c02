"""Structured JSON logging for every StreamForge process."""

from __future__ import annotations

import logging
import os
import sys

from pythonjsonlogger.json import JsonFormatter


def configure_logging(component: str, level: str | None = None) -> None:
    """One JSON object per line on stderr: timestamp, level, component, message and any extras."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "{levelname}{name}{message}",
            style="{",
            rename_fields={"levelname": "level", "name": "logger"},
            static_fields={"component": component, "gateway_id": os.environ.get("STREAMFORGE_GATEWAY_ID", "local")},
            timestamp=True,  # ISO 8601 in UTC with microseconds: sub-second ordering across processes
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level or os.environ.get("STREAMFORGE_LOG_LEVEL", "INFO"))
    # aiokafka logs every retry at WARNING; during a broker restart that is noise, not news.
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
