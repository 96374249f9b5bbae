"""doctune daemon package."""
