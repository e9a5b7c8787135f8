"""Small generated fixtures in every dump format (the bundled demo sample)."""
