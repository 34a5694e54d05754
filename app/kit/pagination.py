"""Forward pagination by opaque keyset cursors (newest first)."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime

from app.kit.errors import BadUserInput

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100

# Lists count their matches up to this many (GitHub-style "1,000+"): a count then costs at
# most this many index entries however big the organization, where an exact count of a
# million keys scans them all on every dashboard view.
COUNT_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class Cursor:
    """A position in a list ordered by (created_at, id) descending."""

    created_at: datetime
    id: str

    def encode(self) -> str:
        raw = f"{self.created_at.isoformat()}|{self.id}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, value: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
            created_at, _, id_ = raw.partition("|")
            moment = datetime.fromisoformat(created_at)
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise BadUserInput(
                "'after' is not a cursor returned by this list.", argument="after"
            ) from None
        if not id_ or moment.tzinfo is None:
            raise BadUserInput("'after' is not a cursor returned by this list.", argument="after")
        return cls(moment, id_)


def check_page_size(first: int) -> int:
    if not 1 <= first <= MAX_PAGE_SIZE:
        raise BadUserInput(
            f"'first' must be between 1 and {MAX_PAGE_SIZE}, got {first}.", argument="first"
        )
    return first
