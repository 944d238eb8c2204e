"""OpenMoji-ZS (placeholder while being written)."""
