"""What the multi-host Redis URLs (``redis+sentinel://``, ``redis+cluster://``) share:
``user:password@`` before a comma-separated list of ``HOST[:PORT]`` (``[IPv6]:PORT``)."""

from __future__ import annotations

from urllib.parse import SplitResult, unquote, urlsplit


def host_port(item: str, url: str, what: str, default_port: int) -> tuple[str, int]:
    if item.startswith("["):  # [IPv6]:port
        host, _, rest = item[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
    if not host:
        raise ValueError(f"a {what} without a host in {url!r}")
    try:
        return host, int(port) if port else default_port
    except ValueError:
        raise ValueError(f"bad {what} port {port!r} in {url!r}") from None


def split_hosts_url(
    url: str, what: str, default_port: int
) -> tuple[SplitResult, str | None, str | None, tuple[tuple[str, int], ...]]:
    """(the split URL, username, password, hosts); ValueError names what is wrong."""
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, pw = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if colon else None
    found = tuple(
        host_port(h.strip(), url, what, default_port) for h in hosts.split(",") if h.strip()
    )
    if not found:
        raise ValueError(f"no {what} address in {url!r}")
    return parts, username, password, found
