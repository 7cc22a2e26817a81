"""``python -m distillcli ...``: the ``distill`` command, for when the console script is not on PATH."""

from distillcli.cli import main

if __name__ == "__main__":
    main()  # main() names the program "distill" in usage lines and completion scripts
