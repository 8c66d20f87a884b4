"""Exception type for dataset problems."""

from __future__ import annotations


class DatasetError(Exception):
    """A dataset could not be found, downloaded, parsed or configured.

    The message always names the problem (file, folder, option) and how to fix it.
    """
