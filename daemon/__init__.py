"""The daemon process: settings, lifecycle, the core service, transports, store, CLI."""
