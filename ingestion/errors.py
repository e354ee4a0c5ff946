"""Exceptions raised by the ingestion stage.

IngestError
├── UnsupportedFormatError   the file type is not one we parse (txt, md, html, pdf, docx) (415/422 at upload)
├── ParseError               the file claims a supported type but cannot be read (corrupt, encrypted, binary)
│   └── ParseLimitError      its parse passed a limit (wall or CPU time, memory, unpacked size, nesting
│                            depth); the message names the limit and its setting
├── EmptyDocumentError       the file parsed but holds no text
├── DocumentTooLargeError    the upload exceeds the configured size limit (413)
├── DocumentNotFoundError    no such document or job for this tenant (404)
├── RedisUnavailableError    Redis (the broker, the job store, the document registry) cannot be reached (503)
├── BlobStoreUnavailableError  the blob store of uploaded files (``ingestion.blobs``) cannot be reached or
│                            refused a request (503; a worker retries). A blob that is not there is a
│                            ``FileNotFoundError``, as a missing local file is.
└── ReindexBusyError         (``ingestion.indexes``) a rebuild is already running (409)
"""


class IngestError(Exception):
    """Base class of every error raised by ``ingestion``."""


class UnsupportedFormatError(IngestError):
    """The file's type is not supported."""


class ParseError(IngestError):
    """The file could not be read as its type."""


class ParseLimitError(ParseError):
    """Parsing the file passed a limit (time, memory, unpacked size, markup depth); the message names it."""


class EmptyDocumentError(IngestError):
    """The file holds no extractable text."""


class DocumentTooLargeError(IngestError):
    """The file is larger than the configured limit."""


class DocumentNotFoundError(IngestError):
    """No such document or job (for this tenant)."""


class RedisUnavailableError(IngestError):
    """Redis (broker, job store or document registry) is unreachable or failed a command."""


class BlobStoreUnavailableError(IngestError):
    """The blob store of uploaded files (an S3 endpoint) is unreachable or failed a request."""
