"""Profile a web process's CPU by thread, for ``benchmarks/profile_table.py``: with ``MD_PROFILE_WEB=PREFIX``
set and this folder first on ``PYTHONPATH``, every thread of a process that calls
``mephisto_dist.web.server.serve`` (the event loop and the hot path's threads) gets a cProfile timed by
``time.thread_time`` (its own CPU, not the wall clock nor the other threads'), written to
``PREFIX.<pid>.<n>`` every 2 s (the forked web server ends with ``os._exit``: nothing runs at its exit).

    MD_PROFILE_WEB=/tmp/web PYTHONPATH=benchmarks/web_profile:. python benchmarks/throughput.py --units 3000
    python benchmarks/profile_table.py --units 3000 /tmp/web.*

Profiling costs: figures in profiles are about twice what the process spends without it; use them for
shares, and /proc (throughput.py's "server CPU") for totals.
"""

import os

_prefix = os.environ.get("MD_PROFILE_WEB")
if _prefix:
    import cProfile
    import marshal
    import sys
    import threading
    import time

    import mephisto_dist.web.server as _server

    _serve = _server.serve
    _profiles: list[cProfile.Profile] = []
    _lock = threading.Lock()

    def _thread_started(frame, event, arg):  # type: ignore[no-untyped-def]
        sys.setprofile(None)
        profile = cProfile.Profile(time.thread_time)
        with _lock:
            _profiles.append(profile)
        profile.enable()

    def _dump_every_2s() -> None:
        while True:
            time.sleep(2)
            with _lock:
                profiles = list(_profiles)
            for index, profile in enumerate(profiles):
                profile.snapshot_stats()
                with open(f"{_prefix}.{os.getpid()}.{index}", "wb") as out:
                    marshal.dump(profile.stats, out)  # type: ignore[attr-defined]

    def serve(*args, **kwargs):  # type: ignore[no-untyped-def]
        threading.Thread(target=_dump_every_2s, daemon=True).start()  # before the hook: not profiled
        threading.setprofile(_thread_started)
        main = cProfile.Profile(time.thread_time)
        with _lock:
            _profiles.append(main)
        main.enable()
        return _serve(*args, **kwargs)

    _server.serve = serve
