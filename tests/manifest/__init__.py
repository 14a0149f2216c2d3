"""cas manifest export/import and cas export."""
