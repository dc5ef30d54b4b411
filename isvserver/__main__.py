"""`python -m isvserver`: the same as the `isvserver` command."""

from isvserver.cli import main

main()
