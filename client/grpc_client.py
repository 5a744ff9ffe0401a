"""A gRPC client for radio.v1: Embed (streamed per-image results), Info, health.

Where the sidecars are:
  * one address, 'host:port' or 'unix:/path': one channel;
  * a gRPC target with a resolver scheme, 'dns:///name:port' (e.g. a Kubernetes headless Service) or
    'ipv4:10.0.0.1:50051,10.0.0.2:50051' / 'ipv6:[::1]:50051,...': ONE channel over every address the
    resolver gives, with gRPC's own round_robin load balancing (each call goes to the next ready
    backend; backends that go away are dropped, new DNS answers picked up on re-resolution);
  * a list of addresses (the older way): one channel each, used round-robin, one call each.
A call that fails with RESOURCE_EXHAUSTED (the sidecar's queue is full) is retried with exponential
backoff; so is one that fails with UNAVAILABLE (a backend died or shut down mid-call) when there are
other backends to go to. Images whose results already arrived are never asked for again, so nothing
is computed or written twice.
"""
from __future__ import annotations

import itertools
import json
import logging
import random
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np

from . import messages as m

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 512 * 1024 * 1024
_DTYPES: dict[int, np.dtype] = {m.enum_value("radio.v1.DType", "DTYPE_UINT8"): np.dtype(np.uint8),
           m.enum_value("radio.v1.DType", "DTYPE_FLOAT32"): np.dtype("<f4")}


class SidecarUnavailable(RuntimeError):
    """The sidecar could not be reached (not running, crashed, or shutting down)."""


class SidecarCallError(RuntimeError):
    """A whole call was refused, not one image: the message says what to fix. `code` is the gRPC
    status name (UNAUTHENTICATED, PERMISSION_DENIED, NOT_FOUND, ...)."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class SidecarAuthError(SidecarCallError):
    """The sidecar wants a token (none sent) or refused the one sent (UNAUTHENTICATED), or refused
    this client (PERMISSION_DENIED)."""


@dataclass
class ImageResult:
    """One image's outcome: `array` (and sizes) on success, else `error_code` + `error`."""

    index: int
    id: str
    array: np.ndarray | None = None
    input_size: tuple[int, int] | None = None
    original_size: tuple[int, int] | None = None
    error_code: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.array is not None


@dataclass
class EmbedOptions:
    output: str = "SUMMARY"  # SUMMARY | FEATURES_NCHW | FEATURES_NLC | HEATMAP
    resolution: str = ""
    graph: str = ""  # a served graph's name (Info: graphs[].name); "" = the server's default graph
    heatmap: dict[str, Any] = field(default_factory=dict)
    space: str = ""  # "" = the backbone; an adaptor of the graph (Info: graphs[].adaptors)


@dataclass
class TextResult:
    """One prompt's outcome: a normalised `embedding` on success, else `error_code` + `error`."""

    index: int
    canonical: str
    embedding: np.ndarray | None = None
    error_code: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.embedding is not None


@dataclass
class TextEmbeddings:
    results: list[TextResult]
    space: str
    logit_scale: float
    logit_bias: float


# gRPC name-resolver schemes whose targets may stand for several backends: balanced round_robin.
BALANCED_SCHEMES = ("dns:", "ipv4:", "ipv6:")
ROUND_ROBIN_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})


def normalize_target(address: str) -> str:
    """'unix:/path', '/path/to.sock' → a gRPC unix target; 'host:port' and resolver targets
    ('dns:///name:port', 'ipv4:a:p,b:p', 'ipv6:[a]:p,...') stay as they are."""
    if address.startswith("unix:"):
        return address
    if address.startswith("/"):
        return f"unix:{address}"
    return address


def is_balanced_target(target: str) -> bool:
    """A target gRPC resolves to possibly many backends (dns:, ipv4:, ipv6:): one round_robin channel."""
    return target.lower().startswith(BALANCED_SCHEMES)


class RadioClient:
    def __init__(self, addresses: str | Sequence[str], *, max_retries: int = 8,
                 backoff_s: float = 0.05, token: str | None = None,
                 root_certificates: bytes | None = None, max_images_per_call: int = 64,
                 max_bytes_per_call: int = 64 * 1024 * 1024) -> None:
        addrs = [addresses] if isinstance(addresses, str) else list(addresses)
        if not addrs:
            raise ValueError("at least one sidecar address is needed")
        self.addresses = [normalize_target(a) for a in addrs]
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                   ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
        self._channels = []
        for target in self.addresses:
            opts: list[tuple[str, Any]] = list(options)
            if is_balanced_target(target):
                # gRPC's round_robin policy over every address the resolver gives (the default,
                # pick_first, would send every call to the first one). The service config also stops
                # a DNS TXT record from choosing another policy.
                opts += [("grpc.service_config", ROUND_ROBIN_CONFIG), ("grpc.service_config_disable_resolution", 1)]
            if root_certificates is not None:
                creds = grpc.ssl_channel_credentials(root_certificates=root_certificates)
                self._channels.append(grpc.secure_channel(target, creds, options=opts))
            else:
                self._channels.append(grpc.insecure_channel(target, options=opts))
        # Several backends (a balanced target, or a list): a call that died with its backend
        # (UNAVAILABLE) can go to another one. With one plain address there is no other to go to: the
        # error goes up at once (the zoo then restarts its local sidecar).
        self.failover = len(self._channels) > 1 or any(is_balanced_target(t) for t in self.addresses)
        self._next = itertools.cycle(range(len(self._channels)))
        self._lock = threading.Lock()
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        # 64: a quarter of the sidecar's default --max-queue (256). A call is admitted whole or refused
        # (RESOURCE_EXHAUSTED, retried), so smaller calls fit beside other callers' images.
        self.max_images_per_call = max_images_per_call
        self.max_bytes_per_call = max_bytes_per_call

    def _retryable(self, err: grpc.RpcError) -> bool:
        """Queue full: always worth another try later. Backend gone (UNAVAILABLE, or the stream cut
        with CANCELLED/INTERNAL when the connection dropped): only when another backend may answer."""
        code = err.code()
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return True
        if not self.failover:
            return False
        if code == grpc.StatusCode.UNAVAILABLE:
            return True
        # A connection reset mid-stream surfaces as CANCELLED/INTERNAL "Received RST_STREAM" on some
        # versions; a real INTERNAL error from the sidecar names itself and is not retried.
        detail = (err.details() or "").lower()
        return code in (grpc.StatusCode.CANCELLED, grpc.StatusCode.INTERNAL) and (
            "rst_stream" in detail or "socket closed" in detail or "connection reset" in detail)

    def _channel(self) -> grpc.Channel:
        with self._lock:
            return self._channels[next(self._next)]

    def close(self) -> None:
        for ch in self._channels:
            ch.close()

    # -- health and info ------------------------------------------------------------------

    def serving(self, timeout: float = 2.0) -> bool:
        """True when every address answers health SERVING."""
        for ch in self._channels:
            call = ch.unary_unary(m.HEALTH_METHOD, request_serializer=lambda r: r.SerializeToString(),
                                  response_deserializer=m.HealthCheckResponse.FromString)
            try:
                if call(m.HealthCheckRequest(), timeout=timeout, metadata=self._metadata).status != m.SERVING:
                    return False
            except grpc.RpcError:
                return False
        return True

    def _unary(self, method: str, request: Any, response_type: Any, timeout: float | None) -> Any:
        """One unary call, retried with backoff (on a fresh channel pick) while _retryable says so."""
        attempt = 0
        while True:
            call = self._channel().unary_unary(method, request_serializer=lambda r: r.SerializeToString(),
                                               response_deserializer=response_type.FromString)
            try:
                return call(request, timeout=timeout, metadata=self._metadata)
            except grpc.RpcError as err:
                if self._retryable(err) and attempt < self.max_retries:
                    time.sleep(self.backoff_s * (2 ** attempt) * (1 + random.random()))
                    attempt += 1
                    continue
                raise _translate(err, self.addresses, token_sent=bool(self._metadata)) from err

    def info(self, timeout: float = 10.0) -> Any:
        return self._unary(m.INFO_METHOD, m.InfoRequest(), m.InfoResponse, timeout)

    # -- text -----------------------------------------------------------------------------

    def embed_text(self, prompts: Sequence[Any], graph: str = "", *, max_prompts_per_call: int = 1024,
                   timeout: float | None = None) -> TextEmbeddings:
        """Normalised text embeddings, one TextResult per prompt, in order. A prompt that cannot
        even be sent (not a string, not encodable as UTF-8) fails on its own; the others go as
        calls of at most `max_prompts_per_call`."""
        results: list[TextResult | None] = [None] * len(prompts)
        sendable: list[int] = []
        for i, p in enumerate(prompts):
            problem = None
            if not isinstance(p, str):
                problem = f"prompt {i}: must be a string, got {type(p).__name__}"
            else:
                try:
                    p.encode("utf-8")
                except UnicodeEncodeError as err:
                    problem = f"prompt {i}: is not valid Unicode ({err.reason} at position {err.start})"
            if problem:
                results[i] = TextResult(index=i, canonical="", error_code="INVALID_ARGUMENT", error=problem)
            else:
                sendable.append(i)
        space, scale, bias = "", 0.0, 0.0
        for start in range(0, len(sendable), max_prompts_per_call):
            chunk = sendable[start:start + max_prompts_per_call]
            request = m.EmbedTextRequest(prompts=[prompts[i] for i in chunk], graph=graph)
            response = self._unary(m.EMBED_TEXT_METHOD, request, m.EmbedTextResponse, timeout)
            space, scale, bias = response.space, response.logit_scale, response.logit_bias
            for r in response.results:
                original = chunk[r.index]
                out = TextResult(index=original, canonical=r.canonical)
                if r.HasField("embedding"):
                    out.embedding = np.frombuffer(r.embedding.data, dtype="<f4").reshape(tuple(r.embedding.shape))
                else:
                    out.error_code = m.enum_name("radio.v1.ErrorCode", r.error.code)
                    out.error = r.error.message.replace(f"prompt {r.index}:", f"prompt {original}:", 1)
                results[original] = out
        missing = [i for i, r in enumerate(results) if r is None]
        if missing:
            raise RuntimeError(f"sidecar answered without results for {len(missing)} prompts")
        return TextEmbeddings(results=[r for r in results if r is not None], space=space, logit_scale=scale, logit_bias=bias)

    # -- embed ----------------------------------------------------------------------------

    def embed(self, inputs: Sequence[dict[str, Any]], options: EmbedOptions,
              timeout: float | None = None) -> list[ImageResult]:
        """Runs images through the sidecar. Each input is {'id', and one of 'path' | 'encoded' |
        'raw' (an HxWxC uint8/float32 array)}. Returns one ImageResult per input, in order.
        Large inputs go as several calls (the sidecar admits a bounded number per call, and a
        bounded message size: a call carries at most `max_bytes_per_call` of pixels and bytes,
        unless one image alone is bigger)."""
        out: list[ImageResult] = []
        for start, stop in _chunks(inputs, self.max_images_per_call, self.max_bytes_per_call):
            chunk = self._embed_call(inputs[start:stop], options, timeout)
            for r in chunk:
                r.index += start
            out.extend(chunk)
        return out

    def _embed_call(self, inputs: Sequence[dict[str, Any]], options: EmbedOptions,
                    timeout: float | None) -> list[ImageResult]:
        results: dict[int, ImageResult] = {}
        for i, item in enumerate(inputs):  # inputs that cannot even be sent fail on their own
            problem = _input_problem(item)
            if problem is not None:
                results[i] = ImageResult(index=i, id=str(item.get("id", "")), error_code="INVALID_ARGUMENT", error=problem)
        pending = [i for i in range(len(inputs)) if i not in results]
        attempt = 0
        while pending:
            request = self._request([inputs[i] for i in pending], options)
            try:
                for result in self._stream(request, timeout):
                    original = pending[result.index]
                    result.index = original
                    results[original] = result
            except grpc.RpcError as err:
                pending = [i for i in pending if i not in results]
                if self._retryable(err) and attempt < self.max_retries:
                    delay = self.backoff_s * (2 ** attempt) * (1 + random.random())
                    if err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                        logger.info("sidecar queue full; retrying %d images in %.2f s", len(pending), delay)
                    else:
                        logger.warning("sidecar went away mid-call (%s: %s); retrying the %d images without a "
                                       "result on another backend in %.2f s", err.code().name, err.details(),
                                       len(pending), delay)
                    time.sleep(delay)
                    attempt += 1
                    continue
                raise _translate(err, self.addresses, token_sent=bool(self._metadata)) from err
            pending = [i for i in pending if i not in results]
            if pending:
                raise RuntimeError(f"sidecar answered without results for {len(pending)} images")
        return [results[i] for i in range(len(inputs))]

    def _stream(self, request: Any, timeout: float | None) -> Iterable[ImageResult]:
        call = self._channel().unary_stream(m.EMBED_METHOD, request_serializer=lambda r: r.SerializeToString(),
                                            response_deserializer=m.EmbedResponse.FromString)
        for response in call(request, timeout=timeout, metadata=self._metadata):
            for r in response.results:
                yield _result(r)

    @staticmethod
    def _request(inputs: Sequence[dict[str, Any]], options: EmbedOptions) -> Any:
        req = m.EmbedRequest()
        for item in inputs:
            img = req.images.add()
            img.id = str(item.get("id", ""))
            if "path" in item:
                img.path = str(item["path"])
            elif "encoded" in item:
                img.encoded = bytes(item["encoded"])
            elif "raw" in item:
                arr = np.asarray(item["raw"])
                if arr.ndim == 2:
                    arr = arr[:, :, None]
                if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
                    raise ValueError(f"image {img.id!r}: raw pixels must be HxW or HxWxC (C = 1, 3, 4), got shape {arr.shape}")
                if arr.dtype == np.uint8:
                    img.raw.dtype = m.enum_value("radio.v1.DType", "DTYPE_UINT8")
                else:
                    arr = arr.astype("<f4")
                    img.raw.dtype = m.enum_value("radio.v1.DType", "DTYPE_FLOAT32")
                img.raw.data = np.ascontiguousarray(arr).tobytes()
                img.raw.height, img.raw.width, img.raw.channels = (int(d) for d in arr.shape)
            else:
                raise ValueError(f"image {img.id!r}: give one of path, encoded, raw")
        wire = req.options
        wire.output = m.enum_value("radio.v1.OutputKind", options.output)
        wire.resolution = options.resolution
        wire.graph = options.graph
        wire.space = options.space
        h = options.heatmap
        if h:
            wire.heatmap.smoothing = bool(h.get("smoothing", False))
            wire.heatmap.sigma = float(h.get("sigma", 0.0))
            wire.heatmap.output_height = int(h.get("output_height", 0))
            wire.heatmap.output_width = int(h.get("output_width", 0))
            wire.heatmap.max_side = int(h.get("max_side", 0))
            wire.heatmap.mode = m.enum_value("radio.v1.HeatmapMode", h.get("mode", "PCA1"))
        return req


def _input_bytes(item: dict[str, Any]) -> int:
    if "encoded" in item:
        return len(item["encoded"])
    if "raw" in item:
        return int(getattr(item["raw"], "nbytes", 0))
    return len(str(item.get("path", "")))


def _chunks(inputs: Sequence[dict[str, Any]], max_images: int, max_bytes: int) -> list[tuple[int, int]]:
    """[start, stop) ranges of at most max_images inputs and max_bytes (but at least one input)."""
    out: list[tuple[int, int]] = []
    start, size = 0, 0
    for i, item in enumerate(inputs):
        n = _input_bytes(item)
        if i > start and (i - start >= max_images or size + n > max_bytes):
            out.append((start, i))
            start, size = i, 0
        size += n
    if start < len(inputs):
        out.append((start, len(inputs)))
    return out


def _input_problem(item: dict[str, Any]) -> str | None:
    """Why an input cannot be put in a request (named like the sidecar's own errors), or None."""
    name = json.dumps(str(item.get("id", "")))
    if not any(k in item for k in ("path", "encoded", "raw")):
        return f"input {name}: give one of path, encoded, raw [INVALID_ARGUMENT]"
    if "raw" in item and "path" not in item and "encoded" not in item:
        try:
            arr = np.asarray(item["raw"])
        except Exception as err:  # e.g. ragged nested lists
            return f"input {name}: raw pixels are not an array ({err}) [INVALID_ARGUMENT]"
        if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (1, 3, 4))):
            return (f"input {name}: raw pixels must be HxW or HxWxC with C = 1, 3 or 4, got shape {arr.shape} "
                    "[INVALID_ARGUMENT]")
        if arr.dtype != np.uint8 and not np.issubdtype(arr.dtype, np.number):
            return f"input {name}: raw pixels must be numbers, got dtype {arr.dtype} [INVALID_ARGUMENT]"
    return None


def _result(r: Any) -> ImageResult:
    out = ImageResult(index=r.index, id=r.id)
    if r.HasField("output"):
        t = r.output.tensor
        dtype = _DTYPES.get(t.dtype)
        if dtype is None:
            raise RuntimeError(f"image {r.id!r}: unknown tensor dtype {t.dtype}")
        out.array = np.frombuffer(t.data, dtype=dtype).reshape(tuple(t.shape))
        out.input_size = (r.output.input_height, r.output.input_width)
        out.original_size = (r.output.original_height, r.output.original_width)
    else:
        out.error_code = m.enum_name("radio.v1.ErrorCode", r.error.code)
        out.error = r.error.message
    return out


def _translate(err: grpc.RpcError, addresses: list[str], *, token_sent: bool = False) -> Exception:
    """A failed call as an exception that says what to fix (the gRPC status name stays in it)."""
    code = err.code() if hasattr(err, "code") else None
    detail = err.details() if hasattr(err, "details") else str(err)
    where = ", ".join(addresses)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED) and "shutting down" not in (detail or ""):
        return SidecarUnavailable(
            f"no sidecar answers at {where} ({code.name}: {detail}). Check that the address and port are right "
            "(server=...), that `radio-sidecar serve` is running there and listens on that interface (--host; "
            "a non-loopback host also needs --token), that no firewall or proxy is in the way, and for a "
            "unix: socket that its path exists and is yours")
    if code == grpc.StatusCode.UNAVAILABLE:
        return SidecarUnavailable(f"sidecar at {where} is shutting down: {detail}")
    if code == grpc.StatusCode.UNAUTHENTICATED:
        fix = ("the token sent was refused: pass the server's token (its RADIO_TOKEN / --token) as token=..."
               if token_sent else "the server wants a token: pass token=... (the server's RADIO_TOKEN / --token)")
        return SidecarAuthError(f"sidecar at {where} refused the call (UNAUTHENTICATED: {detail}): {fix}", "UNAUTHENTICATED")
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return SidecarAuthError(
            f"sidecar at {where} refused this client (PERMISSION_DENIED: {detail}): the server, or a proxy in front "
            "of it, does not allow this client or this token; check its access rules and pass a token it accepts "
            "(token=...)", "PERMISSION_DENIED")
    name = code.name if code else "error"
    return SidecarCallError(f"sidecar call failed ({name}): {detail}", name if code else None)
