"""The `pgjax` subcommands (`pgjax.cli` dispatches), one module each with `build_parser()`
(the parser alone, no side effects), `run(args) -> int` (the work; the exit status) and
`main(argv=None) -> int` (`run(build_parser().parse_args(argv))`). Blocks they share
(the `--devices` mesh, figure saving, YAML mappings, overrides) are in `pgjax.commands.common`."""
