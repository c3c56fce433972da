"""One module per `python -m lib_trainer` sub-command."""
