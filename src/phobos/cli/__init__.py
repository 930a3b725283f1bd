"""The command line: ``parser`` builds it, ``common`` holds the helpers every verb uses, and
each verb lives in a module named after it (``phobos drive ...`` in ``drive.py``). Output
and prompts only: the work is done by the domain packages."""
