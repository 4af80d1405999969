"""Test helpers: scripted strategies and small synthetic markets for replay tests."""
