"""Shared test builders, one module per component."""
