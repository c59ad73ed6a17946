"""Super-resolution architectures, one module each (spandrel style)."""
