"""The read-only web dashboard (``phobos web``).

It reads the config, the history database (SQLite opened read-only), the LED and drive
state files; it never runs a job and never writes state. Starlette, Jinja2 and uvicorn
are imported only by :mod:`phobos.web.app` and :mod:`phobos.cli.web`, so the rest of
phobos starts without them.
"""
