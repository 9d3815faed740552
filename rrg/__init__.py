"""Command-line entry point (`rrg`)."""
