"""HAProxy back end: the service model as HAProxy configuration, reloads and runtime API."""
