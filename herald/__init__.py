"""Cross-cutting pieces of Herald: settings, logging, the exception root."""
