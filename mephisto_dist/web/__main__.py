"""``python -m mephisto_dist.web``: the worker-facing server alone, without the CLI's imports (the
embedded run starts it this way, so that it answers as early as possible)."""

from __future__ import annotations

import argparse

from mephisto_dist.runtime import Runtime
from mephisto_dist.settings import load_settings
from mephisto_dist.web.server import serve


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m mephisto_dist.web")
    parser.add_argument("--run", type=int, default=None, help="serve this run (default: newest open run on --port)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--server-id", type=int, default=None, help="the record an architect made for this server")
    args = parser.parse_args()
    serve(Runtime(load_settings()), run_id=args.run, host=args.host, port=args.port, server_id=args.server_id)


if __name__ == "__main__":
    main()
