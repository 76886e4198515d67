"""Run localstripe on 127.0.0.1 only, keeping its data in a file of ours.

localstripe saves its store to a fixed /tmp path; here it goes to the path given (for
`make run`) or nowhere (`--data ''`, for tests).
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle

from aiohttp import web
from localstripe import resources
from localstripe.server import app


def patch_store(path: str | None) -> None:
    """Point localstripe's persistence at `path`, or turn it off."""
    store = resources.store

    def dump_to_disk() -> None:
        if path:
            tmp = f"{path}.tmp"
            with open(tmp, "wb") as f:
                pickle.dump(dict(store), f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, path)

    def try_load_from_disk() -> None:
        if path and os.path.exists(path):
            with open(path, "rb") as f:
                store.update(pickle.load(f))  # noqa: S301 - our own file, written above

    store.dump_to_disk = dump_to_disk
    store.try_load_from_disk = try_load_from_disk


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data", default="")
    ns = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    patch_store(ns.data or None)
    resources.store.try_load_from_disk()
    web.run_app(app, host="127.0.0.1", port=ns.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
