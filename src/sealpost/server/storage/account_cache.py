"""The account records a storage keeps in memory, the same in both backends: a record never
changes once created (no method updates one; removing an account drops it here), so every
sealed send can check its recipients' delivery tokens against memory, without a read."""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from sealpost.server.storage.base import AccountRecord

__all__ = ["ACCOUNT_CACHE", "AccountCache"]

#: Account records kept in memory (least recently used dropped); about 200 bytes each.
ACCOUNT_CACHE: Final = 50_000


class AccountCache:
    """A mixin of each backend's core, which makes ``_accounts`` (an ``OrderedDict``, in
    least recently used order) in its ``__init__``."""

    _accounts: OrderedDict[bytes, AccountRecord]

    def account_known(self, account_id: bytes) -> AccountRecord | None:
        cached = self._accounts.get(account_id)
        if cached is not None:
            self._accounts.move_to_end(account_id)
        return cached

    def _remember_account(self, record: AccountRecord) -> None:
        """Keep ``record``, just read, dropping the least recently used past the bound."""
        self._accounts[record.account_id] = record
        while len(self._accounts) > ACCOUNT_CACHE:
            self._accounts.popitem(last=False)
