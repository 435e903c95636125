"""`python -m tritongen`: the `tritongen` command (used to run `serve --background`)."""

from tritongen.cli import main

main()
