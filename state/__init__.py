"""doctune state package."""
