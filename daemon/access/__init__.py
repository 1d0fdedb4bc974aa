"""Who may use the daemon and what they did: API keys, scopes, rate limits, IPC peer checks
(peer credentials, ZAP, CURVE), the usage log, and ``Access``, where both doors meet them."""
