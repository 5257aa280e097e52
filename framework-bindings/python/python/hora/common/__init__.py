"""Framework-independent parts of hora's Python API."""
