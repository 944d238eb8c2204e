"""HTTP guards of the service: every client mistake answered 4xx with ``{"error": message}``, never 5xx.

- ``RequestGuard`` (ASGI middleware): a body above the byte limit is refused (413) before it is read — declared
  by Content-Length, or counted while a chunked body arrives; every 4xx gets the one error shape (BentoML 1.4.39
  wraps its own in a one-element list, FastAPI says ``detail``, Starlette answers plain text); a request that
  adaptive batching sheds for capacity (BentoML's 503 "overloaded") is a 429 with ``Retry-After``.
- ``RefusalLog``: a refused request is logged in one line, not with a traceback.
- ``UploadFormSerde``: BentoML's form parsing with the client's mistakes answered 400 instead of 500.
- ``RequestError`` / ``refuse``: a refused upload (``serving.uploads.BadUpload``) as BentoML's exception.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any

from _bentoml_impl.serde import ALL_SERDE, MultipartSerde
from bentoml.exceptions import BentoMLException
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as FormError

from serving.uploads import BadUpload, decode_image


class RequestError(BentoMLException):
    """A refused request: BentoML answers it with the status in ``error_code`` and ``{"error": message}``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.error_code = HTTPStatus(status)


def refuse(error: BadUpload) -> RequestError:
    return RequestError(str(error), error.status)


class UploadFormSerde(MultipartSerde):
    """BentoML 1.4.39's form parsing, with the client's mistakes answered 400 instead of 500: a malformed multipart
    body, text where a file is expected (BentoML would fetch it as a URL) and a file where text is expected or
    under a name the API does not take (BentoML would JSON-decode its bytes)."""

    async def parse_request(self, request: Any, cls: Any) -> Any:
        try:
            form = await request.form()  # Starlette keeps it: the parent parses the same form
        except FormError as error:  # Starlette's 400 for a malformed multipart body, which BentoML makes a 500
            raise RequestError(f"the form could not be read: {error.detail}") from None
        fields = ", ".join(f"{name} (file)" if name in cls.multipart_fields else name for name in cls.model_fields)
        for name, value in form.multi_items():
            is_file = isinstance(value, UploadFile)
            if name in cls.multipart_fields and not is_file:
                raise RequestError(f"{name}: expected a file upload, got a text value (URLs are not fetched)")
            if is_file and name not in cls.multipart_fields:
                raise RequestError(f"{name}: expected a text value, got a file" if name in cls.model_fields else
                                   f"{name}: not a field of this API; it takes {fields}")
        if request.url.path in BATCHED_ROUTES:
            await _check_images(form)
        return await super().parse_request(request, cls)


BATCHED_ROUTES = ("/encode_sketch", "/encode_photo")
RETRY_AFTER_S = 1  # what a refused-for-capacity client is told to wait (429 Retry-After)


async def _check_images(form: Any) -> None:
    """Decode every image of one request before adaptive batching merges it with other clients' requests: a bad
    image must fail its own request, not the merged batch. The picture rides on the form part (``Upload.of``), so
    nothing is decoded twice."""
    from serving.settings import upload_limits

    limits = upload_limits()
    for index, (name, value) in enumerate(item for item in form.multi_items() if isinstance(item[1], UploadFile)):
        data = await value.read()
        await value.seek(0)
        try:
            value.decoded_picture = decode_image(data, limits, f"{name}[{index}]")
        except BadUpload as error:
            raise refuse(error) from None


class RefusalLog(logging.Filter):
    """BentoML logs every exception of an API with its traceback, a client's mistake included: a refused request
    (a 4xx ``BentoMLException``) becomes one line — route, status and the message the client got."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        status = getattr(getattr(error, "error_code", None), "value", 500)
        if isinstance(error, BentoMLException) and status < 500:
            path, method = (*(record.args or ()), "", "")[:2]  # BentoML's "Exception on %s [%s]": path, method
            record.msg, record.args = "refused %s %s: %d %s", (method, path, status, error)
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def install_form_checks() -> None:
    """Route BentoML's multipart and url-encoded parsing through ``UploadFormSerde``; log refusals in one line."""
    ALL_SERDE["multipart/form-data"] = ALL_SERDE["application/x-www-form-urlencoded"] = UploadFormSerde
    api_log = logging.getLogger("bentoml._internal.server.http_app")  # where BentoML logs an API's exceptions
    if not any(isinstance(f, RefusalLog) for f in api_log.filters):
        api_log.addFilter(RefusalLog())




def _error_body(payload: bytes, status: int) -> bytes:
    """A 4xx body as ``{"error": message}``: BentoML's one-element list, FastAPI's ``{"detail": ...}`` (404 of a
    thumbnail, 422 of a path parameter) and Starlette's plain text (405, 404 of a static file) included."""
    try:
        document = json.loads(payload)
    except ValueError:
        document = payload.decode(errors="replace").strip()
    if isinstance(document, list) and len(document) == 1 and isinstance(document[0], dict):
        document = document[0]
    if isinstance(document, dict) and isinstance(document.get("detail"), str) and "error" not in document:
        document = {"error": document["detail"]}
    elif isinstance(document, str) and document:
        document = {"error": document}
    elif not (isinstance(document, dict) and "error" in document):
        document = {"error": HTTPStatus(status).phrase, "detail": document}
    return json.dumps(document).encode()


class RequestGuard:
    """ASGI middleware: refuse a declared body above the byte limit (413) before it is read, and give every
    4xx the one error shape ``{"error": message}`` (BentoML 1.4.39 wraps its own in a one-element list)."""

    def __init__(self, app: Any, image_bytes: int, form_overhead: int = 64 * 1024) -> None:
        self.app, self.max_bytes, self.image_bytes = app, image_bytes + form_overhead, image_bytes

    def _too_large(self, size: str) -> JSONResponse:
        return JSONResponse({"error": f"request body of {size} bytes exceeds the limit of {self.image_bytes} bytes "
                                      f"of images per request (plus {self.max_bytes - self.image_bytes} bytes of form)"},
                            status_code=413)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._too_large(length.decode(errors="replace"))(scope, receive, send)
            return
        if length is None and scope.get("method") in ("POST", "PUT", "PATCH"):
            receive = await self._bounded(scope, receive, send)
            if receive is None:
                return
        start: dict[str, Any] = {}
        body: list[bytes] = []

        async def reshape(message: dict) -> None:
            if message["type"] == "http.response.start" and (400 <= message["status"] < 500 or (
                    message["status"] == 503 and scope.get("method") == "POST")):
                start.update(message)
                return
            if not start:
                await send(message)
                return
            body.append(message.get("body", b""))
            if message.get("more_body"):
                return
            payload, status = _error_body(b"".join(body), start["status"]), start["status"]
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() not in (b"content-length",
                                                                                         b"content-type")]
            if status == 503:  # adaptive batching shed the request: the server is at capacity, not broken
                status, payload = 429, json.dumps({"error": f"the server is at capacity (requests would wait more "
                                                            f"than its latency budget); retry after {RETRY_AFTER_S} s"}).encode()
            if status == 429:
                headers.append((b"retry-after", str(RETRY_AFTER_S).encode()))
            await send({**start, "status": status, "headers": [*headers, (b"content-type", b"application/json"),
                                                               (b"content-length", str(len(payload)).encode())]})
            await send({"type": "http.response.body", "body": payload})

        await self.app(scope, receive, reshape)

    async def _bounded(self, scope: dict, receive: Any, send: Any) -> Any:
        """A body without Content-Length (chunked) is read here up to the limit: beyond it, 413 (None returned);
        within it, the app gets the same body replayed."""
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return receive
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                await self._too_large(f"more than {self.max_bytes}")(scope, receive, send)
                return None
        replay = iter([{"type": "http.request", "body": b"".join(chunks), "more_body": False}])

        async def replayed() -> dict:
            return next(replay, None) or await receive()

        return replayed
