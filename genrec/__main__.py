"""`python -m genrec ...`: the same command line as `genrec ...`."""

from genrec.cli import main

main()
