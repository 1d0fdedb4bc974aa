"""The benchmark behind ``scripts/bench``: served (HTTP and IPC) against offline engine runs."""
