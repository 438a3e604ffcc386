"""A CT study arriving as a stream of file chunks, written to a private folder within limits.

The limits are checked while bytes arrive, before anything is decoded: total bytes, number of
files, and (from the zip directory or the NIfTI header) the slice count, so a huge upload is
refused with RESOURCE_EXHAUSTED instead of filling the disk or memory.
"""

from __future__ import annotations

import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ucadi.errors import UcadiError
from ucadi.v1 import inference_pb2
from ucadi.wire.chunks import ChunkReceiver, TransferError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
# Non-image objects (scouts, dose reports, structured reports) often travel with a series.
EXTRA_FILES_ALLOWED = 64
# What file systems store: a name part (NAME_MAX) and, well within PATH_MAX, a whole path.
MAX_NAME_PART_BYTES = 255
MAX_NAME_BYTES = 1024
SHOWN_NAME_CHARS = 80


class UploadLimitError(UcadiError):
    """The upload is larger than this server accepts."""

    status = "RESOURCE_EXHAUSTED"


class UploadFormatError(UcadiError):
    """The upload's files do not fit the announced study format."""

    status = "INVALID_ARGUMENT"


@dataclass(frozen=True)
class UploadLimits:
    """What one Diagnose request may send."""

    max_upload_bytes: int = 512 << 20
    max_slices: int = 1000
    # Studies received or preprocessed at once; each holds up to max_upload_bytes on disk.
    max_concurrent_studies: int = 8


class StudySlots:
    """Admission of concurrent studies: a full house refuses at once instead of queueing."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)
        self._lock = threading.Lock()
        self.in_use = 0  # studies admitted and not yet finished

    @contextmanager
    def admit(self) -> Iterator[None]:
        """Hold one slot for the duration; UploadLimitError when all are taken."""
        if not self._slots.acquire(blocking=False):
            raise UploadLimitError(f"{self.limit} studies are already being diagnosed; the "
                                   "server is at capacity, retry with backoff")
        with self._lock:
            self.in_use += 1
        try:
            yield
        finally:
            with self._lock:
                self.in_use -= 1
            self._slots.release()


def shown(name: str) -> str:
    """A file name as error messages quote it (a very long one cut short)."""
    return repr(name) if len(name) <= SHOWN_NAME_CHARS else repr(name[:SHOWN_NAME_CHARS]) + "..."


def safe_relative_name(name: str) -> PurePosixPath:
    """A file name as a relative path that stays inside the upload folder and that a file
    system can store (found by `make chaos`: a 70,000-character name was INTERNAL)."""
    path = PurePosixPath(name.replace("\\", "/"))
    if not name or path.is_absolute() or any(part in ("..", "") for part in path.parts):
        raise UploadFormatError(f"file name {shown(name)} is not a relative path inside the "
                                "study (no leading '/', no '..')")
    if any(ord(c) < 32 for c in name) or len(name.encode()) > MAX_NAME_BYTES or any(
            len(part.encode()) > MAX_NAME_PART_BYTES for part in path.parts):
        raise UploadFormatError(f"file name {shown(name)} cannot be stored: names take no "
                                f"control characters, at most {MAX_NAME_PART_BYTES} bytes "
                                f"between slashes and {MAX_NAME_BYTES} in all")
    return path


def receive_study(files: Iterator[inference_pb2.StudyFileChunk], folder: Path,
                  limits: UploadLimits) -> tuple[list[Path], int]:
    """Write every streamed file under `folder`; returns (files in arrival order, total bytes)."""
    max_files = limits.max_slices + EXTRA_FILES_ALLOWED
    written: list[Path] = []
    seen: set[PurePosixPath] = set()
    folders: set[PurePosixPath] = set()
    total = 0
    receiver: ChunkReceiver | None = None
    current: PurePosixPath | None = None
    try:
        for item in files:
            name = safe_relative_name(item.name)
            if name != current:
                if receiver is not None:
                    written.append(receiver.finish())
                if name in seen:
                    raise UploadFormatError(f"file {shown(item.name)} was sent twice or its "
                                            "chunks were interleaved with another file's")
                parents = {PurePosixPath(*name.parts[:i]) for i in range(1, len(name.parts))}
                if name in folders or parents & seen:
                    raise UploadFormatError(f"file {shown(item.name)} clashes with another file "
                                            "of the upload: one name is both a file and a folder")
                folders |= parents
                if len(seen) >= max_files:
                    raise UploadLimitError(
                        f"upload has more than {max_files} files; this server accepts studies "
                        f"of at most {limits.max_slices} slices")
                seen.add(name)
                current = name
                receiver = ChunkReceiver(folder / Path(*name.parts),
                                         max_bytes=limits.max_upload_bytes)
            total += len(item.chunk.data)
            if total > limits.max_upload_bytes:
                raise UploadLimitError(
                    f"upload exceeds {limits.max_upload_bytes >> 20} MiB; this server accepts "
                    f"studies up to that size (raise --max-upload-mb to allow more)")
            try:
                receiver.feed(item.chunk)
            except TransferError as exc:
                raise UploadFormatError(f"file {shown(item.name)}: {exc}") from None
        if receiver is not None:
            try:
                written.append(receiver.finish())
            except TransferError as exc:
                raise UploadFormatError(f"file {current}: {exc}") from None
    except BaseException:
        if receiver is not None:
            receiver.abort(keep_partial=False)
        raise
    if not written:
        raise UploadFormatError("the request carried no study files after its options")
    return written, total


def study_path(files: list[Path], folder: Path, study_format: int) -> Path:
    """The path the CT loader should open for this upload and format."""
    formats = inference_pb2.StudyFormat
    if study_format in (formats.STUDY_FORMAT_UNSPECIFIED, formats.STUDY_FORMAT_DICOM_FILES):
        return folder
    if len(files) != 1:
        raise UploadFormatError(f"a {formats.Name(study_format)} upload is one file; got "
                                f"{len(files)}")
    path = files[0]
    if study_format == formats.STUDY_FORMAT_ZIP and not zipfile.is_zipfile(path):
        raise UploadFormatError(f"{path.name} is not a zip archive")
    if study_format == formats.STUDY_FORMAT_NIFTI and not path.name.endswith(NIFTI_SUFFIXES):
        raise UploadFormatError(f"{path.name} is not named like a NIfTI volume "
                                f"({' or '.join(NIFTI_SUFFIXES)})")
    return path


def check_slice_limit(path: Path, study_format: int, limits: UploadLimits) -> None:
    """Refuse a zip or NIfTI upload holding more slices than allowed, before decoding it."""
    formats = inference_pb2.StudyFormat
    if study_format == formats.STUDY_FORMAT_ZIP:
        with zipfile.ZipFile(path) as archive:
            members = sum(1 for info in archive.infolist() if not info.is_dir())
        if members > limits.max_slices + EXTRA_FILES_ALLOWED:
            raise UploadLimitError(f"zip holds {members} files; this server accepts studies of "
                                   f"at most {limits.max_slices} slices")
    elif study_format == formats.STUDY_FORMAT_NIFTI:
        import nibabel

        try:
            shape = nibabel.load(str(path)).header.get_data_shape()
        except Exception as exc:  # nibabel raises several unrelated types for bad headers
            raise UploadFormatError(f"{path.name} is not a readable NIfTI volume: {exc}") from None
        if len(shape) >= 3 and shape[2] > limits.max_slices:
            raise UploadLimitError(f"NIfTI volume has {shape[2]} slices; this server accepts "
                                   f"at most {limits.max_slices}")
