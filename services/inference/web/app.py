"""The page's routes (Starlette): the page, the upload, results, downloads and history.

Diagnosis goes through the inference service's own path (`InferenceService.diagnose_received`:
the card's preprocessing, the dynamic batcher, Grad-CAM), so the page and the gRPC Diagnose
answer a study identically. Every refusal is JSON `{"error": message, "status": code}` with the
HTTP status of its kind; the page shows the message.
"""

from __future__ import annotations

import html
import logging
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from services.inference.callers import Caller
from services.inference.diagnosis import DEFAULT_SAMPLES
from services.inference.upload import EXTRA_FILES_ALLOWED, UploadLimitError, study_path
from services.inference.web.access import PageAccess, Scope, with_security_headers
from services.inference.web.history import DiagnosisHistory
from services.inference.web.results import PageResult, RecentResults, page_result
from services.inference.web.settings import WebSettings
from services.inference.web.study_upload import (
    LengthRequiredError,
    check_content_length,
    multipart_boundary,
    receive_browser_study,
)
from ucadi.errors import UcadiError

if TYPE_CHECKING:
    from services.inference.server import InferenceService

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
HTTP_STATUS = {"INVALID_ARGUMENT": 400, "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403,
               "NOT_FOUND": 404, "FAILED_PRECONDITION": 409, "RESOURCE_EXHAUSTED": 429,
               "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504}
SEED = 0  # the page's samplings are reproducible: the same study gives the same answer


class ResultNotFoundError(UcadiError):
    """The result is not (or no longer) kept for this user."""

    status = "NOT_FOUND"


def error_response(exc: UcadiError) -> JSONResponse:
    """The JSON refusal of a domain error."""
    if isinstance(exc, (UploadLimitError, LengthRequiredError)):
        status = 413 if isinstance(exc, UploadLimitError) else 411
    else:
        status = HTTP_STATUS.get(exc.status, 400)
    return JSONResponse({"error": str(exc), "status": exc.status}, status_code=status)


def refusal_page(exc: UcadiError) -> HTMLResponse:
    """A browser's readable page for a refused sign-in (no script, no style needed)."""
    return HTMLResponse(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>UCADI: not "
        f"signed in</title></head><body><h1>Not signed in</h1><p>{html.escape(str(exc))}</p>"
        "</body></html>", status_code=error_response(exc).status_code)


class WebPage:
    """The page of one inference service: access rules, history, recent results, routes."""

    def __init__(self, service: InferenceService, settings: WebSettings) -> None:
        self.service, self.settings = service, settings
        self.access = PageAccess.for_settings(settings)
        self.history = DiagnosisHistory(settings.history_db, settings.history_retention_days)
        self.results = RecentResults()

    def app(self) -> Any:
        """The ASGI application, wrapped with authentication and the security headers."""
        routes = [
            Route("/", self.index), Route("/api/session", self.session),
            Route("/api/diagnoses", self.create_diagnosis, methods=["POST"]),
            Route("/api/diagnoses/{id:str}", self.diagnosis_json),
            Route("/api/diagnoses/{id:str}/ct.bin", self.ct_slices),
            Route("/api/diagnoses/{id:str}/heatmap.bin", self.heatmap),
            Route("/api/diagnoses/{id:str}/montage.png", self.montage),
            Route("/api/history", self.history_json),
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ]
        return with_security_headers(self._authenticated(Starlette(routes=routes)))

    def _authenticated(self, app: Any) -> Any:
        async def wrapped(scope: Scope, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            try:
                user = self.access.user(scope, headers)
                self.access.check_csrf(user, scope["method"], headers)
            except UcadiError as exc:
                log.info("web %s %s refused: %s", scope["method"], scope["path"], exc)
                wants_page = "text/html" in headers.get("accept", "")
                response = refusal_page(exc) if wants_page else error_response(exc)
                await response(scope, receive, send)
                return
            scope.setdefault("state", {})["user"] = user
            await app(scope, receive, send)
        return wrapped

    @staticmethod
    def _user(request: Request) -> Caller:
        return request.state.user

    async def index(self, request: Request) -> Response:
        """The page."""
        return FileResponse(STATIC_DIR / "index.html")

    async def session(self, request: Request) -> Response:
        """Who is signed in, the CSRF token, the upload limits and the served model."""
        user = self._user(request)
        limits = self.service.config.limits
        model = None
        if self.service.store.ready:
            served = self.service.store.current()
            model = {"version": served.version, "arch": served.card.arch,
                     "preset": served.card.preset}
        return JSONResponse({
            "user": user.name, "role": user.role, "csrf_token": self.access.csrf_token(user),
            "limits": {"max_upload_bytes": limits.max_upload_bytes,
                       "max_slices": limits.max_slices,
                       "max_files": limits.max_slices + EXTRA_FILES_ALLOWED},
            "model": model, "history_retention_days": self.settings.history_retention_days})

    async def create_diagnosis(self, request: Request) -> Response:
        """Receive a study, diagnose it (5 samplings, Grad-CAM), keep and record the result."""
        user = self._user(request)
        limits = self.service.config.limits
        try:
            headers = {k.lower(): v for k, v in request.headers.items()}
            check_content_length(headers, limits)
            boundary = multipart_boundary(headers.get("content-type", ""))
            self.service.store.current()  # no model yet: refuse before the upload
            result = await self._diagnose(request, boundary, user)
        except UcadiError as exc:
            log.info("web diagnosis for %s refused: %s", user.name, exc)
            return error_response(exc)
        except ClientDisconnect:
            log.info("web upload by %s broke off before it was complete", user.name)
            return JSONResponse({"error": "the upload broke off", "status": "CANCELLED"},
                                status_code=400)
        except Exception:
            log.exception("web diagnosis for %s failed", user.name)
            return JSONResponse({"error": "the diagnosis failed inside the server; the site's "
                                          "administrator will find the cause in its log",
                                 "status": "INTERNAL"}, status_code=500)
        summary = result.summary
        self.results.add(user.name, result)
        self.history.add({"study_uid": summary["study"]["study_uid"],
                          "series_uid": summary["study"]["series_uid"],
                          "predicted_class": summary["predicted_class"],
                          "covid_probability": summary["covid_probability"],
                          "probabilities": summary["probabilities"],
                          "model_version": summary["model"]["version"], "user": user.name})
        log.info("web diagnosis by %s (role %s, via %s): study %s -> %s (model %s)", user.name,
                 user.role, user.via, summary["study"]["study_uid"] or "(no UID)",
                 summary["predicted_class"], summary["model"]["version"])
        return JSONResponse(summary, status_code=201)

    async def _diagnose(self, request: Request, boundary: bytes, user: Caller) -> PageResult:
        service = self.service
        with service.study_slots.admit(), \
                tempfile.TemporaryDirectory(prefix="ucadi-web-study-") as folder:
            files, upload_bytes, study_format = await receive_browser_study(
                request.stream(), boundary, Path(folder), service.config.limits,
                anyio.to_thread.run_sync)
            deadline = time.monotonic() + service.config.request_timeout_s

            def diagnose() -> PageResult:
                diagnosis = service.diagnose_received(
                    files, Path(folder), study_format, samples=DEFAULT_SAMPLES, seed=SEED,
                    want_heatmap=True, deadline=deadline)
                return page_result(study_path(files, Path(folder), study_format), diagnosis,
                                   upload_bytes)

            return await anyio.to_thread.run_sync(diagnose)

    def _result(self, request: Request) -> PageResult:
        result = self.results.get(self._user(request).name, request.path_params["id"])
        if result is None:
            raise ResultNotFoundError("this result is no longer kept (the page keeps the newest "
                                      "results for an hour); upload the study again")
        return result

    async def diagnosis_json(self, request: Request) -> Response:
        """A result's JSON (`?download=1`: as a file)."""
        try:
            result = self._result(request)
        except UcadiError as exc:
            return error_response(exc)
        headers = {}
        if request.query_params.get("download"):
            headers["content-disposition"] = f'attachment; filename="ucadi-{result.id[:8]}.json"'
        return JSONResponse(result.summary, headers=headers)

    async def ct_slices(self, request: Request) -> Response:
        """The viewer's CT slices: int16 little-endian HU, (slices, rows, columns)."""
        try:
            result = self._result(request)
        except UcadiError as exc:
            return error_response(exc)
        return Response(result.ct_hu.astype("<i2").tobytes(),
                        media_type="application/octet-stream")

    async def heatmap(self, request: Request) -> Response:
        """The viewer's Grad-CAM heatmap: uint8 0..255, (slices, rows, columns)."""
        try:
            result = self._result(request)
        except UcadiError as exc:
            return error_response(exc)
        return Response(result.heatmap.tobytes(), media_type="application/octet-stream")

    async def montage(self, request: Request) -> Response:
        """The PNG montage of the sampled slices with the heatmap, as a download."""
        try:
            result = self._result(request)
        except UcadiError as exc:
            return error_response(exc)
        return Response(result.montage_png, media_type="image/png", headers={
            "content-disposition": f'attachment; filename="ucadi-{result.id[:8]}.png"'})

    async def history_json(self, request: Request) -> Response:
        """The newest history entries."""
        entries = await anyio.to_thread.run_sync(self.history.recent)
        return JSONResponse({"retention_days": self.settings.history_retention_days,
                             "entries": entries})
