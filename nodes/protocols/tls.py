"""Client TLS from a node's config files: one place that loads them and says which file failed, and why."""

from __future__ import annotations

import ssl


def client_context(ca_file: str | None, cert_file: str | None = None, key_file: str | None = None,
                   verify_hostname: bool = True, field_prefix: str = "") -> ssl.SSLContext:  # fmt: skip
    """A context trusting `ca_file` (default: the system's CAs), with a client certificate if given. ValueError
    naming the config field and the file: a missing certificate is a refused configuration, not a peer that is
    away."""
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"{field_prefix}ca_file {ca_file}: {getattr(exc, 'strerror', None) or exc}") from exc
    context.check_hostname = verify_hostname
    if cert_file is not None:
        try:
            context.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"{field_prefix}cert_file {cert_file} / key_file {key_file}: "
                             f"{getattr(exc, 'strerror', None) or exc}") from exc  # fmt: skip
    return context
