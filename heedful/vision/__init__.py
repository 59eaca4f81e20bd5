"""Images as sources: reading, encoding and building image corpora."""
