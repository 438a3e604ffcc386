"""A browser's study upload (multipart/form-data) streamed into a private study folder.

The page sends every file of a DICOM folder as a `file` part named by its path inside the
folder, or one zip or NIfTI file. Parts are written to disk as they arrive (nothing is held in
memory), under the same rules as the gRPC upload (`services/inference/upload.py`): names stay
inside the folder, the file count and the total size stay within the server's limits, which
are checked against the request's Content-Length before a byte is read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import IO

from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import parse_options_header

from services.inference.upload import (
    EXTRA_FILES_ALLOWED,
    NIFTI_SUFFIXES,
    UploadFormatError,
    UploadLimitError,
    UploadLimits,
    safe_relative_name,
    shown,
)
from ucadi.errors import UcadiError
from ucadi.v1 import inference_pb2

FILE_FIELD = "file"
# Multipart framing around each file (boundary, Content-Disposition, Content-Type): the
# Content-Length allowance on top of the file bytes.
PART_OVERHEAD_BYTES = 1024


class LengthRequiredError(UcadiError):
    """The upload did not announce its size."""

    status = "FAILED_PRECONDITION"


def max_request_bytes(limits: UploadLimits) -> int:
    """Largest Content-Length an upload within `limits` can have."""
    return limits.max_upload_bytes + (limits.max_slices + EXTRA_FILES_ALLOWED) * \
        PART_OVERHEAD_BYTES


def check_content_length(headers: dict[str, str], limits: UploadLimits) -> int:
    """The announced size of an upload, refused before reading when it is beyond the limit."""
    raw = headers.get("content-length")
    if raw is None or not raw.isdigit():
        raise LengthRequiredError("the upload must announce its size (Content-Length); "
                                  "chunked uploads are not accepted")
    size = int(raw)
    if size > max_request_bytes(limits):
        raise UploadLimitError(f"the upload is {size / 2**20:.1f} MiB; this server accepts "
                               f"studies up to {limits.max_upload_bytes >> 20} MiB")
    return size


def multipart_boundary(content_type: str) -> bytes:
    """The boundary of a multipart/form-data body."""
    kind, options = parse_options_header(content_type)
    if kind != b"multipart/form-data" or not options.get(b"boundary"):
        raise UploadFormatError("send the study as multipart/form-data with one 'file' part per "
                                "file (the page does this)")
    return options[b"boundary"]


def study_format_of(names: list[str]) -> int:
    """The StudyFormat of the uploaded file names: one zip, one NIfTI, or DICOM files."""
    formats = inference_pb2.StudyFormat
    if len(names) == 1 and names[0].lower().endswith(".zip"):
        return formats.STUDY_FORMAT_ZIP
    if len(names) == 1 and names[0].lower().endswith(NIFTI_SUFFIXES):
        return formats.STUDY_FORMAT_NIFTI
    return formats.STUDY_FORMAT_DICOM_FILES


class StudyPartsWriter:
    """python-multipart callbacks writing each `file` part to folder/<its name>."""

    def __init__(self, folder: Path, limits: UploadLimits) -> None:
        self.folder, self.limits = folder, limits
        self.max_files = limits.max_slices + EXTRA_FILES_ALLOWED
        self.files: list[Path] = []
        self.names: list[str] = []
        self.total = 0
        self._header: list[bytes] = [b"", b""]
        self._headers: dict[bytes, bytes] = {}
        self._out: IO[bytes] | None = None

    def callbacks(self) -> dict[str, Callable[..., None]]:
        """The callbacks for MultipartParser."""
        return {"on_part_begin": self._part_begin, "on_header_field": self._header_field,
                "on_header_value": self._header_value, "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished, "on_part_data": self._part_data,
                "on_part_end": self._part_end}

    def _part_begin(self) -> None:
        self._headers = {}

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header[0] += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._header[1] += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header[0].lower()] = self._header[1]
        self._header = [b"", b""]

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        field = options.get(b"name", b"").decode("utf-8", "replace")
        if field != FILE_FIELD or b"filename" not in options:
            raise UploadFormatError(f"unexpected form field {field!r}; the upload carries only "
                                    f"'{FILE_FIELD}' parts, one per file")
        name = options[b"filename"].decode("utf-8", "replace")
        relative = safe_relative_name(name)
        if name in self.names:
            raise UploadFormatError(f"file {shown(name)} was sent twice")
        if len(self.files) >= self.max_files:
            raise UploadLimitError(f"the upload has more than {self.max_files} files; this "
                                   f"server accepts studies of at most {self.limits.max_slices} "
                                   "slices")
        path = self.folder / Path(*relative.parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._out = path.open("xb")
        except (FileExistsError, IsADirectoryError, NotADirectoryError):
            raise UploadFormatError(f"file {shown(name)} clashes with another file of the "
                                    "upload: one name is both a file and a folder") from None
        self.files.append(path)
        self.names.append(name)

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        self.total += end - start
        if self.total > self.limits.max_upload_bytes:
            raise UploadLimitError(f"the upload exceeds {self.limits.max_upload_bytes >> 20} "
                                   "MiB; this server accepts studies up to that size")
        self._out.write(data[start:end])  # type: ignore[union-attr]

    def _part_end(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    def close(self) -> None:
        """Close a file left open by an upload that broke off."""
        self._part_end()


async def receive_browser_study(chunks: AsyncIterator[bytes], boundary: bytes, folder: Path,
                                limits: UploadLimits,
                                run: Callable[..., Awaitable[None]]) -> tuple[list[Path], int, int]:
    """Write the upload's files under `folder`: (files, file bytes, StudyFormat).

    `run(function, argument)` runs the blocking parse-and-write step off the event loop.
    """
    writer = StudyPartsWriter(folder, limits)
    parser = MultipartParser(boundary, writer.callbacks())
    try:
        async for chunk in chunks:
            await run(parser.write, chunk)
        parser.finalize()
    except MultipartParseError as exc:
        raise UploadFormatError(f"the upload is not well-formed multipart data ({exc})") from None
    finally:
        writer.close()
    if not writer.files:
        raise UploadFormatError("the upload carried no files; choose a DICOM folder, a zip or a "
                                "NIfTI volume")
    return writer.files, writer.total, study_format_of(writer.names)
