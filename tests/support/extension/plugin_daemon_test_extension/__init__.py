"""Test extension."""
