"""The registry's v2 HTTP API: what is there, under which digest, with which labels.

Used to skip unchanged images without a local cache, to refuse overwriting a version
tag, and to read a pushed manifest back before anything is pinned. Speaks Basic auth
and the Bearer token flow that Harbor, GitLab and Docker Hub use.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import os
import re
import socket
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlencode, urljoin, urlsplit

import requests
import urllib3
from requests.auth import _basic_auth_str
from urllib3 import HTTPHeaderDict

from heps.core.credentials import Credentials
from heps.core.errors import ConfigError, TemporaryError
from heps.core.log import redact_urls
from heps.core.references import DIGEST
from heps.core.settings import LOOPBACK, RegistrySettings

MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.index.v1+json",
    ]
)
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')
_DIGEST = re.compile(DIGEST)
CATALOG_PAGE = 1000
SCOPES_PER_TOKEN = 50
"""Repositories one shared token covers: its JWT grows by each (about 60 bytes)."""
CATALOG_WORTH = 20
"""Names looked up at once from which one catalog listing costs less than their look-ups."""
MAX_ANSWER = 16 << 20
"""The largest answer read (16 MiB): four times distribution's limit on a manifest, far
above a catalog page or an image config; a registry cannot make a run read without end."""
MAX_TOKEN_ANSWER = 64 << 10
"""The largest token-service answer read: a JWT for SCOPES_PER_TOKEN scopes is a few KiB."""


ANSWER_SECONDS = 60.0
"""The longest one answer may take to read, status line to last byte: each read's
timeout alone let a registry dripping a byte at a time hold a run without end."""


class _Deadline(io.RawIOBase):
    """A socket's reads, each given the time left before the answer's deadline at most."""

    def __init__(self, sock: socket.socket, reader: Any):
        self.sock = sock
        self.reader = reader  # the socket's own: it keeps the socket open until read
        self.each = sock.gettimeout()  # the read timeout urllib3 has just set
        self.deadline = time.monotonic() + ANSWER_SECONDS

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"the answer took longer than {ANSWER_SECONDS:.0f} s")
        self.sock.settimeout(min(left, self.each) if self.each is not None else left)
        return int(self.reader.readinto(buffer))

    def close(self) -> None:
        self.reader.close()
        super().close()


class _TimedResponse(http.client.HTTPResponse):
    """http.client's answer, read through `_Deadline` (headers and body alike)."""

    def __init__(self, sock: socket.socket, *args: Any, **kw: Any):
        super().__init__(sock, *args, **kw)
        self.fp = io.BufferedReader(_Deadline(sock, self.fp.detach()))


class _HTTP(urllib3.connection.HTTPConnection):
    response_class = _TimedResponse


class _HTTPS(urllib3.connection.HTTPSConnection):
    response_class = _TimedResponse


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _HTTP


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _HTTPS


_NO_RETRY = urllib3.Retry(total=None, connect=0, read=0, status=0, other=0, redirect=0)
"""No retry: `with_retries` decides those. Redirects are followed by `_send`."""
REDIRECTS = 5


@dataclass(frozen=True)
class _Answer:
    """A registry's answer, read whole (manifests and configs are small)."""

    status_code: int
    headers: HTTPHeaderDict
    content: bytes

    @property
    def ok(self) -> bool:
        return self.status_code < 400

    def json(self) -> Any:
        try:
            return json.loads(self.content)
        except RecursionError:  # a ValueError like any other text that is not JSON
            raise ValueError("nested past the JSON parser's depth") from None

    @property
    def links(self) -> dict[str, dict[str, str]]:
        """The Link header by relation, as requests parses it."""
        header = self.headers.get("Link", "")
        return {
            link.get("rel") or link.get("url", ""): link
            for link in requests.utils.parse_header_links(header)
        }


def _host(url: str) -> str:
    """The host urllib3 connects to for `url` (an IPv6 address without brackets)."""
    return (urllib3.util.parse_url(url).host or "").strip("[]")


@dataclass(frozen=True)
class RemoteImage:
    digest: str
    labels: dict[str, str]


class Registry:
    def __init__(
        self,
        settings: RegistrySettings,
        creds: Credentials | None,
        cache_dir: Path | None = None,
        timeout: float = 15,
    ):
        self.settings = settings
        self.creds = creds
        self.cache_dir = cache_dir
        """Labels by manifest digest: content-addressed, so never stale."""
        self.timeout = timeout
        self._lock = threading.Lock()
        self._managers: dict[tuple[str, str], urllib3.PoolManager] = {}
        self._basic = (
            _basic_auth_str(self.creds.username.encode(), self.creds.password.value.encode())
            if self.creds
            else ""
        )
        self._tokens: dict[str, str] = {}
        self._challenge = ""
        """The registry's Bearer challenge (its token service and realm), once seen."""
        self._reached = False
        """Answered once: a lost connection from then on is an outage, not a bad host."""
        self._checked: Future[None] | None = None
        self._ahead: dict[tuple[str, str], Future[RemoteImage | None]] = {}

    def _pool(self, url: str) -> urllib3.PoolManager:
        """One pool of connections per host for every thread, set up once as requests
        would for that URL (proxy, CA bundle, .netrc from the environment): urllib3 itself
        on the hot path, where requests' own per-call work doubled the client's CPU per
        look-up. A blob store the registry redirects to gets its own (its proxy, NO_PROXY)."""
        where = urlsplit(url)
        with self._lock:
            pool = self._managers.get((where.scheme, where.netloc))
            if pool is None:
                pool = self._managers[where.scheme, where.netloc] = self._connect(url)
            return pool

    def _connect(self, url: str) -> urllib3.PoolManager:
        found = requests.Session().merge_environment_settings(url, {}, None, None, None)
        verify = found["verify"]
        tls: dict[str, Any] = {"cert_reqs": "CERT_REQUIRED" if verify else "CERT_NONE"}
        if verify:
            bundle = requests.utils.DEFAULT_CA_BUNDLE_PATH if verify is True else str(verify)
            tls["ca_cert_dir" if os.path.isdir(bundle) else "ca_certs"] = bundle
        if self.creds is None and url.startswith(f"{self.settings.url}/"):
            netrc = requests.utils.get_netrc_auth(self.settings.url)
            if netrc:
                self._basic = _basic_auth_str(*netrc)
        proxy = requests.utils.select_proxy(url, found["proxies"])
        if proxy:
            login = urlsplit(proxy)
            headers = (
                urllib3.make_headers(
                    proxy_basic_auth=f"{unquote(login.username)}:{unquote(login.password or '')}"
                )
                if login.username
                else None
            )
            manager: urllib3.PoolManager = urllib3.ProxyManager(
                proxy, maxsize=16, proxy_headers=headers, **tls
            )
        else:
            manager = urllib3.PoolManager(maxsize=16, **tls)
        manager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
        return manager

    def _read(self, raw: urllib3.BaseHTTPResponse, limit: int) -> bytes | None:
        """The answer's body, None past `limit` bytes (the rest is never read)."""
        content = raw.read(limit + 1)
        if len(content) > limit:
            raw.close()  # the connection is not reused
            return None
        raw.release_conn()
        return content

    def _request(
        self, method: str, path: str, scope: str, retried: bool = False, **kw: Any
    ) -> _Answer:
        url = f"{self.settings.url}/v2/{path}"
        headers = dict(kw.pop("headers", {}))
        if scope in self._tokens:
            headers["Authorization"] = f"Bearer {self._tokens[scope]}"
        elif self._basic:
            headers["Authorization"] = self._basic
        try:
            raw = self._send(method, url, headers, kw.get("data"))
            content = self._read(raw, MAX_ANSWER)
            if content is None:
                raise ConfigError(
                    f"registry {self.settings.host}: the answer to {path.split('?')[0]} is "
                    f"larger than {MAX_ANSWER >> 20} MiB; is this a Docker registry?"
                )
            response = _Answer(raw.status, raw.headers, content)
            if response.status_code == 401 and not retried:  # no token yet, or it expired
                challenge = response.headers.get("WWW-Authenticate", "")
                if challenge.lower().startswith("bearer"):
                    self._challenge = challenge
                    self._tokens[scope] = self._token(challenge, [scope] if scope else [])
                    return self._request(method, path, scope, True, headers=headers, **kw)
        except urllib3.exceptions.MaxRetryError as exc:
            raise self._unreached(exc.reason or exc, path) from None
        except urllib3.exceptions.HTTPError as exc:
            raise self._unreached(exc, path) from None
        if response.status_code == 401:
            who = f"the credentials from {self.creds.source}" if self.creds else "anonymous access"
            raise ConfigError(
                f"registry {self.settings.host}: refused {who} (401); set "
                "HEPS_REGISTRY_USERNAME/HEPS_REGISTRY_PASSWORD or `docker login "
                f"{self.settings.host}`"
            )
        self._reached = True
        if response.status_code >= 500:
            raise TemporaryError(f"registry {self.settings.host}: {response.status_code} on {path}")
        return response

    def _send(
        self, method: str, url: str, headers: dict[str, str], body: Any
    ) -> urllib3.BaseHTTPResponse:
        """The answer at the end of up to REDIRECTS redirects (a blob store's), each
        through its host's pool; Authorization never sent to another host than the one
        it was given for, as urllib3 and requests drop it."""
        for _ in range(REDIRECTS + 1):
            raw = self._pool(url).request(
                method,
                url,
                headers=headers,
                body=body,
                timeout=self.timeout,
                retries=_NO_RETRY,
                redirect=False,
                preload_content=False,
            )
            location = raw.get_redirect_location()
            if not location:
                return raw
            raw.close()  # a redirect's body is not read
            target = urljoin(url, location)
            if urlsplit(target)[:2] != urlsplit(url)[:2]:
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            if raw.status == 303:
                method, body = "GET", None
            url = target
        raise ConfigError(
            f"registry {self.settings.host}: more than {REDIRECTS} redirects; is this a "
            "Docker registry?"
        )

    def _unreached(self, exc: BaseException, path: str) -> Exception:
        """What a failed exchange means, as requests' ConnectionError and Timeout did:
        a read timeout is a slow registry; anything else, before the registry first
        answered, a wrong address or a registry not started, after it, an outage."""
        if isinstance(exc, urllib3.exceptions.ReadTimeoutError):
            return TemporaryError(f"registry {self.settings.host}: timed out on {path}")
        if self._reached:  # it answered before: an outage, worth a retry
            return TemporaryError(
                f"registry {self.settings.host}: connection lost ({type(exc).__name__})"
            )
        return ConfigError(
            f"registry {self.settings.host}: cannot connect ({type(exc).__name__}); start it "
            "with `heps services up` or set registry.host / --registry"
        )

    def _realm(self, challenge: str) -> str:
        """Where the challenge sends the password, if it may go there: the registry's
        own host (any port) or the operator's HEPS_REGISTRY_TOKEN_HOST, over HTTPS unless
        on loopback. The registry names the realm, so it could name any host, or plain
        HTTP behind a TLS registry."""
        realm: str = dict(_CHALLENGE.findall(challenge)).get("realm", "")
        try:  # read by the parser that sends: urllib.parse and urllib3 differ on `a\\@b`
            where = urllib3.util.parse_url(realm)
        except urllib3.exceptions.LocationParseError:
            where = urllib3.util.Url()
        host = (where.host or "").strip("[]")
        if not host or where.auth is not None:
            problem = "is not a URL with a host (and no user)"
        elif host not in (_host(self.settings.url), self.settings.token_host):
            problem = (
                f"is on another host than the registry; set HEPS_REGISTRY_TOKEN_HOST={host} "
                "if the registry's token service lives there"
            )
        elif where.scheme != "https" and not (where.scheme == "http" and host in LOOPBACK):
            problem = "is not https: the password would travel in clear"
        else:
            return realm
        raise ConfigError(
            redact_urls(
                f"registry {self.settings.host}: its token service {realm} {problem}; "
                "nothing was sent there"
            )
        )

    def _token(self, challenge: str, scopes: list[str]) -> str:
        realm = self._realm(challenge)
        params: dict[str, str | list[str]] = dict(_CHALLENGE.findall(challenge))
        params.pop("realm")
        if scopes:
            params["scope"] = scopes  # one `scope` parameter each, as the token spec asks
        url = f"{realm}{'&' if urlsplit(realm).query else '?'}{urlencode(params, doseq=True)}"
        try:
            # its own pool: another host has its own proxy settings
            raw = self._send(
                "GET", url, {"Authorization": self._basic} if self._basic else {}, None
            )
            text = self._read(raw, MAX_TOKEN_ANSWER)
        except urllib3.exceptions.HTTPError as exc:
            reason = exc.reason if isinstance(exc, urllib3.exceptions.MaxRetryError) else exc
            raise ConfigError(redact_urls(f"registry token service {realm}: {reason}")) from None
        if raw.status != 200:
            raise ConfigError(
                f"registry {self.settings.host}: token service refused the credentials "
                f"({raw.status}); check HEPS_REGISTRY_USERNAME/PASSWORD"
            )
        try:
            body = json.loads(text) if text is not None else None
        except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
            body = None
        token = (body.get("token") or body.get("access_token")) if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise ConfigError(
                redact_urls(
                    f"registry {self.settings.host}: token service {realm} answered no token "
                    "(not a JSON object with a `token`); check the registry's auth settings"
                )
            )
        return token

    def _scope(self, name: str, actions: str = "pull") -> str:
        return f"repository:{self.settings.namespace}/{name}:{actions}"

    def _share_tokens(self, names: Iterable[str]) -> None:
        """On a token registry, one token for the pull of up to SCOPES_PER_TOKEN
        repositories: asked once per batch, not once per image. A repository the token
        service leaves out of it (a pull-only account, Harbor's project rights) is answered
        401 and gets a token of its own, as before; a service that refuses a batch, too."""
        wanted = [self._scope(n) for n in names if self._scope(n) not in self._tokens]
        for start in range(0, len(wanted), SCOPES_PER_TOKEN):
            batch = wanted[start : start + SCOPES_PER_TOKEN]
            try:
                token = self._token(self._challenge, batch)
            except ConfigError:
                return
            self._tokens.update(dict.fromkeys(batch, token))

    def look_ahead(self, tags: Iterable[tuple[str, str]], parallel: int = 8) -> None:
        """Check the registry and look up these (name, tag) pairs in the background, so
        the registry answers while the caller computes; `check` and `image` then return
        what was found, and raise any failure there, where it was always raised."""
        pool = ThreadPoolExecutor(parallel, thread_name_prefix="registry")
        pairs = dict(tags)
        checked = self._checked = pool.submit(self._check)

        def unlisted() -> set[str]:
            checked.result()  # nothing is asked of a registry that refused us
            if self._tokens:  # a token registry: its catalog is filtered or refused
                self._share_tokens(pairs)
                return set()
            return self._unlisted(pairs)

        absent = pool.submit(unlisted)

        def after_check(name: str, tag: str) -> RemoteImage | None:
            return None if name in absent.result() else self._image(name, tag)

        self._ahead = {(n, t): pool.submit(after_check, n, t) for n, t in pairs.items()}
        pool.shutdown(wait=False)

    def _unlisted(self, tags: dict[str, str]) -> set[str]:
        """Of the names in `tags`, those with no repository in the registry's catalog: one
        request per page of the namespace instead of one per name, where the catalog is
        complete (a registry with Basic or no auth). Empty (every name asked one by one)
        on any refusal, malformed or endless answer, and when the first unlisted name is
        found after all."""
        if len(tags) < CATALOG_WORTH:
            return set()
        prefix = f"{self.settings.namespace}/"
        listed: set[str] = set()
        last = prefix  # the catalog is sorted: the namespace's names come after this
        pages = len(tags) // min(CATALOG_PAGE, 100) + 3  # pages of 100 or more, and the end
        for _ in range(pages):
            try:
                response = self._request(
                    "GET", f"_catalog?n={CATALOG_PAGE}&last={quote(last)}", "registry:catalog:*"
                )
                repositories = response.json()["repositories"] if response.ok else None
            except (ConfigError, TemporaryError, ValueError, TypeError, KeyError):
                return set()
            if not isinstance(repositories, list) or not all(
                isinstance(r, str) for r in repositories
            ):
                return set()
            listed.update(r[len(prefix) :] for r in repositories if r.startswith(prefix))
            if "next" not in response.links or (repositories and repositories[-1] > prefix + "~"):
                break  # the catalog's end, or past every name of the namespace
            last = repositories[-1] if repositories else last
        else:
            return set()
        unlisted = sorted(set(tags) - listed)
        if unlisted and self._image(unlisted[0], tags[unlisted[0]]) is not None:
            return set()  # a catalog that leaves out what is there: not one to trust
        return set(unlisted)

    def drop_look_ahead(self) -> None:
        """Cancel the look-ups not yet started: the caller stopped (a bad tree, Ctrl-C),
        and the process must not wait for 5,000 answers nobody reads."""
        for future in self._ahead.values():
            future.cancel()
        self._ahead = {}

    def check(self) -> None:
        """Reachable and accepting our credentials, or a ConfigError saying which fix."""
        checked, self._checked = self._checked, None
        if checked is not None:
            checked.result()
            return
        self._check()

    def _check(self) -> None:
        response = self._request("GET", "", "")
        if response.status_code != 200 or "Docker-Distribution-API-Version" not in response.headers:
            raise ConfigError(
                f"registry {self.settings.host}: /v2/ answered {response.status_code}; "
                "is this a Docker registry (distribution v2)?"
            )

    def manifest(self, name: str, ref: str) -> tuple[str, dict[str, Any]] | None:
        """(digest, manifest) of `ref` (tag or digest), None when absent."""
        path = f"{self.settings.namespace}/{name}/manifests/{ref}"
        response = self._request("GET", path, self._scope(name), headers={"Accept": MANIFEST_TYPES})
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise TemporaryError(f"registry: {response.status_code} reading {name}:{ref}")
        digest = f"sha256:{hashlib.sha256(response.content).hexdigest()}"
        named = response.headers.get("Docker-Content-Digest", digest)
        if named != digest or (ref.startswith("sha256:") and ref != digest):
            raise self._malformed(
                f"the manifest of {name}:{ref}", f"bytes hash to {digest}, not {named!r}"
            )
        return digest, self._json_object(response, f"the manifest of {name}:{ref}")

    def config_digest(self, name: str, ref: str) -> tuple[str, str] | None:
        """(manifest digest, config digest) of `ref`; None when absent. The config digest
        is the image ID the engine gave the image that was pushed."""
        found = self.manifest(name, ref)
        if found is None:
            return None
        image = self._image_manifest(name, found[1])
        return (found[0], self._config_of(name, image)) if image else None

    def tag(self, name: str, tag: str, digest: str) -> None:
        """Put the manifest `digest` (already in the repository) under `tag` as well,
        byte for byte, so the tag's digest is `digest`."""
        path = f"{self.settings.namespace}/{name}/manifests/{digest}"
        scope = self._scope(name, "pull,push")
        got = self._request("GET", path, scope, headers={"Accept": MANIFEST_TYPES})
        if got.status_code != 200:
            raise TemporaryError(f"registry: {got.status_code} reading {name}@{digest}")
        media_type = got.headers.get("Content-Type", "")
        put = self._request(
            "PUT",
            f"{self.settings.namespace}/{name}/manifests/{tag}",
            scope,
            headers={"Content-Type": media_type},
            data=got.content,
        )
        if put.status_code != 201:
            raise TemporaryError(f"registry: {put.status_code} tagging {name}:{tag}")

    def digest(self, name: str, ref: str) -> str | None:
        """The digest behind a tag (one HEAD request), None when absent."""
        path = f"{self.settings.namespace}/{name}/manifests/{ref}"
        response = self._request(
            "HEAD", path, self._scope(name), headers={"Accept": MANIFEST_TYPES}
        )
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise TemporaryError(f"registry: {response.status_code} looking up {name}:{ref}")
        return self._sha256(
            response.headers.get("Docker-Content-Digest"), f"the digest of {name}:{ref}"
        )

    def image(self, name: str, tag: str) -> RemoteImage | None:
        """The image behind a tag with its labels, None when the tag is absent.

        One request when the labels of that digest were read before (the manifest GET
        carries the digest), two when its config blob must be read.
        """
        ahead = self._ahead.pop((name, tag), None)
        return ahead.result() if ahead is not None else self._image(name, tag)

    def _image(self, name: str, tag: str) -> RemoteImage | None:
        found = self.manifest(name, tag)
        if found is None:
            return None
        digest, manifest = found
        cached = self._cached_labels(digest)
        if cached is not None:
            return RemoteImage(digest, cached)
        remote = self._labels(name, tag, digest, manifest)
        self._cache_labels(digest, remote.labels)
        return remote

    def _cached_labels(self, digest: str) -> dict[str, str] | None:
        if self.cache_dir is None:
            return None
        try:
            labels: dict[str, str] = json.loads((self.cache_dir / digest).read_text())
        except (OSError, ValueError):
            return None
        return labels

    def _cache_labels(self, digest: str, labels: dict[str, str]) -> None:
        if self.cache_dir is None:
            return
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_dir / f".{digest}.{threading.get_ident()}"
        tmp.write_text(json.dumps(labels))
        tmp.replace(self.cache_dir / digest)

    def _image_manifest(self, name: str, manifest: dict[str, Any]) -> dict[str, Any] | None:
        """The image manifest itself; of an index, its linux/amd64 entry (what we build)."""
        if "manifests" not in manifest:
            return manifest
        entries = manifest["manifests"]
        if (
            not isinstance(entries, list)
            or not entries
            or not all(
                isinstance(m, dict) and isinstance(m.get("platform", {}), dict) for m in entries
            )
        ):
            raise self._malformed(f"the index of {name}", "`manifests` is no list of entries")
        pick = next(
            (m for m in entries if m.get("platform", {}).get("architecture") == "amd64"),
            entries[0],
        )
        inner = self.manifest(name, self._sha256(pick.get("digest"), f"the index of {name}"))
        return inner[1] if inner else None

    def _labels(self, name: str, tag: str, digest: str, manifest: dict[str, Any]) -> RemoteImage:
        image = self._image_manifest(name, manifest)
        if image is None:
            return RemoteImage(digest, {})
        blob = self._config_of(name, image)
        path = f"{self.settings.namespace}/{name}/blobs/{blob}"
        response = self._request("GET", path, self._scope(name))
        if response.status_code != 200:
            raise TemporaryError(f"registry: {response.status_code} reading config of {name}:{tag}")
        config = self._json_object(response, f"the image config of {name}:{tag}")
        inner = config.get("config")
        labels = (inner.get("Labels") if isinstance(inner, dict) else None) or {}
        if not isinstance(labels, dict) or not all(
            isinstance(v, str) for v in labels.values()
        ):  # JSON keys are strings
            raise self._malformed(f"the image config of {name}:{tag}", "labels not all text")
        return RemoteImage(digest, labels)

    def _config_of(self, name: str, image: dict[str, Any]) -> str:
        config = image.get("config")
        found = config.get("digest") if isinstance(config, dict) else None
        return self._sha256(found, f"the manifest of {name}")

    def _sha256(self, value: object, what: str) -> str:
        """A digest the registry answered, before it names a URL or a cached file."""
        if not isinstance(value, str) or not _DIGEST.fullmatch(value):
            raise self._malformed(what, f"{repr(value)[:80]} is not a sha256 digest")
        return value

    def _json_object(self, response: _Answer, what: str) -> dict[str, Any]:
        """The answer's body as a JSON object; ConfigError naming `what` otherwise."""
        try:
            found = response.json()
        except ValueError as exc:
            raise self._malformed(what, str(exc)) from None
        if not isinstance(found, dict):
            raise self._malformed(what, "not a JSON object")
        return found

    def _malformed(self, what: str, problem: str) -> ConfigError:
        return ConfigError(
            f"registry {self.settings.host}: {what}: {problem}; is this a Docker registry?"
        )
