"""The `pgjax` subcommands, one module each with `main(argv) -> int` (`pgjax.cli` dispatches)."""
