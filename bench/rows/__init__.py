"""One module per benchmark row group; each `run(...)` returns its result rows."""
