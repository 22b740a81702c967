"""Every way the kaggle client fails, turned into a KaggleError that says what failed and what to do.

Refused credentials name their source (never their value) and how to replace them; a proxy that
cannot be reached names the variable that set it (never the user:password in its URL); an
unreachable Kaggle says to check the network. `python -m pipeline` prints a KaggleError as one
`error: ...` line.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import socket
import ssl
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pipeline.errors import PipelineError

HOW_TO_AUTHENTICATE = (
    "create an API token at https://www.kaggle.com/settings (section API) and either save the downloaded "
    "kaggle.json as ~/.kaggle/kaggle.json (chmod 600), set KAGGLE_USERNAME and KAGGLE_KEY, or set KAGGLE_API_TOKEN"
)
TOKEN_PAGE = "https://www.kaggle.com/settings (section API)"
TOKEN_FILES = ("access_token", "access_token.txt")  # in ~/.kaggle, as the kaggle client reads them
SECRET_VARIABLES = ("KAGGLE_KEY", "KAGGLE_API_TOKEN")


class KaggleError(PipelineError):
    """A Kaggle call that failed; the message says what to do."""


def is_token(source: str) -> bool:
    return source == "$KAGGLE_API_TOKEN" or Path(source).name in TOKEN_FILES


def how_to_fix(source: str) -> str:
    """What to do when Kaggle refuses the credentials from `source`."""
    if source == "$KAGGLE_API_TOKEN":
        return (
            f"create a new API token at {TOKEN_PAGE} and set KAGGLE_API_TOKEN to it, "
            "or unset KAGGLE_API_TOKEN to use other credentials"
        )
    if source == "$KAGGLE_USERNAME/$KAGGLE_KEY":
        return (
            "set KAGGLE_USERNAME and KAGGLE_KEY to the username and key in a kaggle.json downloaded from "
            f"{TOKEN_PAGE}, "
            "or unset them to use other credentials"
        )
    if is_token(source):
        return f"save a new API token from {TOKEN_PAGE} in {source}, or delete that file to use other credentials"
    if Path(source).name == "credentials.json":
        return f"run `kaggle auth login` again, or delete {source} and {HOW_TO_AUTHENTICATE}"
    return f"download a new kaggle.json from {TOKEN_PAGE} and save it as {source} (chmod 600)"


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` without credentials: known secret values, user:password in URLs, query strings (signed links)."""
    for secret in {*secrets, *(os.environ.get(name) for name in SECRET_VARIABLES)}:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    text = re.sub(r"(://)[^/\s@'\"]*@", r"\1", text)
    return re.sub(r"(https?://[^\s?'\"]*)\?[^\s'\")]*", r"\1?...", text)


@contextlib.contextmanager
def kaggle_failures(
    what: str, credential_source: str, *, signing_in: bool = False, secrets: Iterable[str | None] = ()
) -> Iterator[io.StringIO]:
    """Run kaggle client code with its stdout chatter captured (yielded); any failure becomes a KaggleError.

    The kaggle client fails in many ways: requests' HTTPError and ConnectionError (ProxyError, SSLError,
    ConnectTimeout), Timeout, ChunkedEncodingError, urllib3 errors it does not wrap (a download read
    from the raw stream), OSError, ValueError (a download of the wrong size), SystemExit (its sign-in
    gives up with exit(1)). None of them may reach the user as a traceback."""
    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter):
            yield chatter
    except KaggleError:
        raise
    except SystemExit:
        if signing_in:
            raise KaggleError(
                f"{what}: Kaggle did not accept the credentials from {credential_source}; "
                f"{how_to_fix(credential_source)}"
            ) from None
        said = [line.strip() for line in chatter.getvalue().splitlines() if line.strip()]
        raise KaggleError(
            f"{what}: the kaggle client gave up" + (f" ({redact(said[-1], secrets)})" if said else "")
        ) from None
    except Exception as error:  # noqa: BLE001 - every failure of the client, named below
        raise KaggleError(failure_message(what, error, credential_source, signing_in, secrets)) from None


def failure_message(
    what: str, error: Exception, credential_source: str, signing_in: bool = False, secrets: Iterable[str | None] = ()
) -> str:
    """The message for `error`, raised by the kaggle client while doing `what`."""
    import requests
    import urllib3

    if isinstance(error, ImportError):
        return (
            f"{what}: the kaggle package cannot be imported ({error}); "
            "install the project's requirements: pip install -r requirements.txt"
        )
    if isinstance(error, requests.HTTPError):
        return http_failure(what, error, credential_source, signing_in, secrets)
    if isinstance(
        error,
        (
            requests.RequestException,
            urllib3.exceptions.HTTPError,
            ssl.SSLError,
            ConnectionError,
            TimeoutError,
            socket.gaierror,
        ),
    ):
        return network_failure(what, error, secrets)
    detail = redact(str(error), secrets)
    return f"{what}: the kaggle client failed ({type(error).__name__}{': ' + detail if detail else ''})"


def http_failure(
    what: str, error: Any, credential_source: str, signing_in: bool = False, secrets: Iterable[str | None] = ()
) -> str:
    status = error.response.status_code if error.response is not None else None
    reason = redact(str(error.args[0]) if error.args else "", secrets)
    if status == 407:
        proxy = proxy_in_use(failed_url(error))
        if proxy:
            return (
                f"{what}: the proxy {proxy.address} {proxy.set_in} asks for a login (HTTP 407: {reason}); "
                f"put the right user:password in its URL, or {proxy.unset} to connect directly"
            )
    if status in (401, 403):
        if signing_in:
            return (
                f"{what}: Kaggle refused the credentials from {credential_source} (HTTP {status}: {reason}); "
                f"{how_to_fix(credential_source)}"
            )
        return (
            f"{what}: Kaggle refused the credentials from {credential_source} (HTTP {status}: {reason}). "
            "If they are right, accept the competition's rules on its web page; otherwise "
            f"{how_to_fix(credential_source)}"
        )
    if status == 404:
        return f"{what}: not found on Kaggle (HTTP 404: {reason}); check the competition name"
    if status is not None and status >= 500:
        return f"{what}: Kaggle server error (HTTP {status}: {reason}); nothing was changed here, try again later"
    return f"{what}: Kaggle answered HTTP {status}: {reason}"


@dataclass(frozen=True)
class Proxy:
    address: str  # without user:password
    variables: tuple[str, ...]  # the environment variables that set it; empty: the system's proxy settings

    @property
    def set_in(self) -> str:
        return f"set in {' and '.join(self.variables)}" if self.variables else "from the system's proxy settings"

    @property
    def unset(self) -> str:
        return f"unset {' and '.join(self.variables)}" if self.variables else "change the system's proxy settings"


def proxy_in_use(url: str) -> Proxy | None:
    """The proxy that requests sends `url` through (its rule: *_proxy variables, lowercase first, NO_PROXY), or None."""
    from requests.utils import get_environ_proxies, select_proxy

    try:
        proxies = get_environ_proxies(url)
        proxy = select_proxy(url, proxies)
    except Exception:  # noqa: BLE001 - a setting requests cannot read gives no proxy to name
        return None
    if not proxy:
        return None
    scheme = urlsplit(url).scheme.lower()
    key = next((key for key in (scheme, "all") if proxies.get(key) == proxy), None)
    variables = tuple(
        sorted(name for name, value in os.environ.items() if key and value and name.lower() == f"{key}_proxy")
    )
    return Proxy(redact(proxy), variables)


def failed_url(error: BaseException) -> str:
    """The URL the failed request went to: from the error, else the Kaggle API the client talks to."""
    url = getattr(getattr(error, "request", None), "url", None)
    if url:
        return url
    try:
        from kagglesdk.kaggle_env import get_endpoint, get_env

        return get_endpoint(get_env())
    except Exception:  # noqa: BLE001 - e.g. an unknown KAGGLE_API_ENVIRONMENT
        return "https://api.kaggle.com"


ROOT_CAUSES = (
    r"\[Errno -?\d+\] [^'\")\]]+",
    r"\[SSL[^\]]*\][^'\")]*",
    r"Tunnel connection failed: [^'\")]+",
    r"(?:Read|Connect|Connection to [^\s'\"]+) timed out\.?(?: \(\w+ timeout=[^)]*\))?",
    r"Connection (?:broken|aborted)[^'\"]*",
)


def root_cause(error: BaseException, secrets: Iterable[str | None] = ()) -> str:
    """What went wrong underneath, in a few words, e.g. '[Errno 111] Connection refused'."""
    chain, todo = [], [error]
    while (
        todo and len(chain) < 20
    ):  # the error, its causes and the errors it wraps (urllib3 keeps them in args or .reason)
        link = todo.pop(0)
        if isinstance(link, BaseException) and all(link is not seen for seen in chain):
            chain.append(link)
            todo += [
                link.__cause__,
                link.__context__,
                getattr(link, "reason", None),
                getattr(link, "original_error", None),
                *link.args,
            ]
    for link in chain:
        if (
            type(link).__module__ == "builtins"
            and isinstance(link, OSError)
            and link.errno is not None
            and link.strerror
        ):
            return f"[Errno {link.errno}] {link.strerror}"
    for pattern in ROOT_CAUSES:
        for link in chain:
            found = re.search(pattern, str(link))
            if found:
                return redact(found.group(0).strip(" .,:"), secrets)
    detail = redact(str(error), secrets)
    return f"{type(error).__name__}: {detail[:300]}" if detail else type(error).__name__


def network_failure(what: str, error: BaseException, secrets: Iterable[str | None] = ()) -> str:
    """The message for a failure to talk to Kaggle: a proxy names its variable, otherwise check the network."""
    import requests
    import urllib3

    url = failed_url(error)
    host = redact(urlsplit(url).netloc) or url
    why = root_cause(error, secrets)
    proxy = proxy_in_use(url)
    if proxy and isinstance(error, (requests.exceptions.ProxyError, urllib3.exceptions.ProxyError)):
        return (
            f"{what}: cannot connect to the proxy {proxy.address} {proxy.set_in} ({why}); "
            f"check that this address is right and the proxy is running, or {proxy.unset} to connect to Kaggle directly"
        )
    if isinstance(error, (requests.exceptions.SSLError, urllib3.exceptions.SSLError, ssl.SSLError)):
        hint = (
            f"if the proxy {proxy.address} {proxy.set_in} inspects HTTPS, set REQUESTS_CA_BUNDLE to its CA certificate "
            f"file, or {proxy.unset}"
            if proxy
            else "check the computer's date and time; if your network inspects HTTPS, set REQUESTS_CA_BUNDLE to its CA "
            "certificate file"
        )
        return f"{what}: the secure connection to {host} failed ({why}); {hint}"
    through = f" through the proxy {proxy.address} {proxy.set_in}" if proxy else ""
    check = (
        f"check the network connection and that proxy, or {proxy.unset} to connect directly"
        if proxy
        else "check the network connection and try again"
    )
    network = (
        requests.ConnectionError,
        requests.Timeout,
        requests.exceptions.ChunkedEncodingError,
        requests.exceptions.ContentDecodingError,
        urllib3.exceptions.HTTPError,
        ConnectionError,
        TimeoutError,
        socket.gaierror,
    )
    if not isinstance(
        error, network
    ):  # the request itself could not be made or read: a bad URL, a redirect loop, not JSON
        return f"{what}: the request to {host}{through} failed ({why}); {check}"
    if isinstance(
        error,
        (
            requests.ConnectionError,
            ConnectionError,
            socket.gaierror,
            urllib3.exceptions.NewConnectionError,
            urllib3.exceptions.MaxRetryError,
        ),
    ) and not isinstance(error, requests.exceptions.ChunkedEncodingError):
        return f"{what}: cannot reach Kaggle at {host}{through} ({why}); {check}"
    return f"{what}: the connection to Kaggle at {host}{through} failed ({why}); {check}"
