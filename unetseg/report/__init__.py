"""Reports (one HTML page with its figures, Markdown, JSON) and plain-text terminal tables."""
