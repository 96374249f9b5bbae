"""doctune pipeline package."""
