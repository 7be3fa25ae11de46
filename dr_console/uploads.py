"""A ceiling on what one request may upload, enforced while the request is read rather than after.

Django parses a multipart body the first time anything reads request.POST, and that is CSRF's check, before any
view or permission runs: without a ceiling, anyone with a CSRF cookie could have a web worker spool gigabytes to
FILE_UPLOAD_TEMP_DIR, and a form that checks `upload.size` only sees the file once it is all on disk.
`UploadLimitHandler`, first of FILE_UPLOAD_HANDLERS, stops the upload once its files pass UPLOAD_MAX_BYTES
(before reading any file at all when Content-Length already says so). The handlers after it never see the rest,
the temporary file they started is deleted, and the request remembers it was refused (`upload_refused`), so a
form can say so in its own words. Fields other than files are capped by DATA_UPLOAD_MAX_MEMORY_SIZE.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.http import HttpRequest

_REFUSED = "_dr_console_upload_refused"


def upload_refused(request: HttpRequest) -> bool:
    """Whether this request's files were cut off at UPLOAD_MAX_BYTES (read request.POST or FILES first)."""
    return bool(getattr(request, _REFUSED, False))


class UploadLimitHandler(FileUploadHandler):
    def __init__(self, request: HttpRequest | None = None) -> None:
        super().__init__(request)
        self.request_length = 0
        self.received = 0  # file bytes of the whole request so far, every file counted

    def handle_raw_input(
        self, input_data: Any, META: Any, content_length: int, boundary: Any, encoding: str | None = None
    ) -> None:
        self.request_length = content_length
        return None  # parse as usual

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        super().new_file(*args, **kwargs)
        # What the other fields may add at most; beyond that, the files alone are over the limit.
        if self.request_length > settings.UPLOAD_MAX_BYTES + (settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 0):
            self._refuse()

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        self.received += len(raw_data)
        if self.received > settings.UPLOAD_MAX_BYTES:
            self._refuse()
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None  # the next handlers keep the file

    def _refuse(self) -> None:
        if self.request is not None:
            setattr(self.request, _REFUSED, True)
        # A body at most twice the limit is read to its end and dropped, so that the browser waits for the answer
        # and shows it; past that, reading stops at once (the sender sees the connection close).
        raise StopUpload(connection_reset=self.request_length > 2 * settings.UPLOAD_MAX_BYTES)
