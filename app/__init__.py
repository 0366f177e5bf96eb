"""custintel: customer intelligence over HTTP."""
