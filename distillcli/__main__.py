"""``python -m distillcli ...``: the ``distill`` command, for when the console script is not on PATH."""

import sys

from distillcli.cli import main

if __name__ == "__main__":
    # click names a program run by `python -m` "python -m distillcli" in usage lines and completion scripts;
    # name it as the console script is named. click takes the name from argv[0] when __main__ has no package.
    sys.argv[0] = "distill"
    __package__ = ""
    main()
